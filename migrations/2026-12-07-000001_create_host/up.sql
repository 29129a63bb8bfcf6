-- Hypervisor hosts: the libvirt URIs instances run on. `status` is what an admin set: enabled,
-- or disabled (maintenance: nothing new is placed there). `online`, `last_contact` and
-- `error_message` are what the last probe found; the facts (CPU, memory, versions, machine
-- types, firmware, KVM) are what libvirt reported then. `host_uuid` is libvirt's host UUID:
-- two URIs reaching one libvirtd are one host. `machine_types`, `firmware` and `tags` are JSON
-- arrays of strings.
CREATE TABLE `host` (
  `host_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `host_name` VARCHAR(255) NOT NULL,
  `uri` VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `address` VARCHAR(255) NOT NULL,
  `host_uuid` CHAR(36) CHARACTER SET ascii NULL,
  `status` VARCHAR(16) NOT NULL,
  `online` TINYINT(1) NOT NULL DEFAULT 0,
  `last_contact` BIGINT UNSIGNED NULL,
  `error_message` VARCHAR(2048) NULL,
  `arch` VARCHAR(32) NOT NULL DEFAULT '',
  `cpu_model` VARCHAR(128) NOT NULL DEFAULT '',
  `cpu_sockets` INT UNSIGNED NOT NULL DEFAULT 0,
  `cpu_cores` INT UNSIGNED NOT NULL DEFAULT 0,
  `cpu_threads` INT UNSIGNED NOT NULL DEFAULT 0,
  `cpus` INT UNSIGNED NOT NULL DEFAULT 0,
  `memory_mib` BIGINT UNSIGNED NOT NULL DEFAULT 0,
  `memory_free_mib` BIGINT UNSIGNED NOT NULL DEFAULT 0,
  `libvirt_version` VARCHAR(32) NOT NULL DEFAULT '',
  `qemu_version` VARCHAR(32) NOT NULL DEFAULT '',
  `machine_types` VARCHAR(4096) NOT NULL DEFAULT '[]',
  `firmware` VARCHAR(1024) NOT NULL DEFAULT '[]',
  `kvm` TINYINT(1) NOT NULL DEFAULT 0,
  `tags` VARCHAR(2048) NOT NULL DEFAULT '[]',
  `create_time` BIGINT UNSIGNED NOT NULL,
  `update_time` BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (`host_id`),
  UNIQUE KEY `uk_host_name` (`host_name`),
  UNIQUE KEY `uk_host_uri` (`uri`),
  UNIQUE KEY `uk_host_uuid` (`host_uuid`),
  KEY `idx_host_status` (`status`),
  KEY `idx_host_create_time` (`create_time`, `host_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- An instance names its host by id instead of by URI: every URI instances were made on becomes a
-- host (named like its id; `host/update` renames it), and the URI column goes.
INSERT INTO `host` (`host_id`, `host_name`, `uri`, `address`, `status`, `create_time`, `update_time`)
SELECT CONCAT('host-', LEFT(MD5(`host`), 8)), CONCAT('host-', LEFT(MD5(`host`), 8)), `host`,
       MIN(`host_ip`), 'enabled', UNIX_TIMESTAMP(), UNIX_TIMESTAMP()
FROM `instance` GROUP BY `host`;

ALTER TABLE `instance`
  ADD COLUMN `host_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL AFTER `host_ip`;

UPDATE `instance` i JOIN `host` h ON h.`uri` = i.`host` COLLATE utf8mb4_bin
SET i.`host_id` = h.`host_id`;

ALTER TABLE `instance`
  MODIFY COLUMN `host_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  DROP COLUMN `host`,
  ADD KEY `idx_instance_host` (`host_id`);
