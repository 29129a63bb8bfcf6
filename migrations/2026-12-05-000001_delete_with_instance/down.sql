ALTER TABLE `volume` DROP COLUMN `delete_with_instance`;
ALTER TABLE `network_interface` DROP COLUMN `delete_with_instance`;
