ALTER TABLE `network_interface` DROP KEY `idx_nic_project`, DROP COLUMN `project_id`;
ALTER TABLE `volume` DROP KEY `idx_volume_project`, DROP COLUMN `project_id`;
ALTER TABLE `instance` DROP KEY `idx_instance_project`, DROP COLUMN `project_id`;
ALTER TABLE `image` DROP KEY `idx_image_project`, DROP COLUMN `visibility`, DROP COLUMN `project_id`;
