ALTER TABLE `instance`
  ADD COLUMN `host` VARCHAR(255) NOT NULL DEFAULT '' AFTER `host_ip`;

UPDATE `instance` i JOIN `host` h ON h.`host_id` = i.`host_id`
SET i.`host` = h.`uri`;

ALTER TABLE `instance`
  ALTER COLUMN `host` DROP DEFAULT,
  DROP KEY `idx_instance_host`,
  DROP COLUMN `host_id`;

DROP TABLE `host`;
