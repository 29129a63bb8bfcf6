ALTER TABLE `instance` ADD COLUMN `domain_uuid` CHAR(36) NULL AFTER `root_size`;
