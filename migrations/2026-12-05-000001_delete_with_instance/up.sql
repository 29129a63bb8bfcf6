-- What instance/create made for an instance itself (the volume from data_volume_size, the NIC
-- made when none was given) goes with the instance on destroy; what existed before and was
-- attached is released. Cleared when the device is detached.
ALTER TABLE `volume`
  ADD COLUMN `delete_with_instance` TINYINT(1) NOT NULL DEFAULT 0;
ALTER TABLE `network_interface`
  ADD COLUMN `delete_with_instance` TINYINT(1) NOT NULL DEFAULT 0;
