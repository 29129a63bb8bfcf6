-- api_web schema for operators: `mariadb < sql/api_web.sql` creates the database and its tables.
-- The service's own migrations (migrations/, applied by `api-web migrate` or at start-up) create
-- the same tables; a test applies both to fresh databases and compares the results.
-- The script records the migrations it embodies (last statement), so `api-web migrate` then
-- applies only later ones. A new migration changes this script too: its tables and its version
-- below (a test fails when a version is missing).

CREATE DATABASE IF NOT EXISTS `api_web` DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE `api_web`;

CREATE TABLE `image` (
  `image_id` VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `image_name` VARCHAR(255) NOT NULL,
  `image_size` BIGINT UNSIGNED NOT NULL,
  `os_type` VARCHAR(16) NOT NULL,
  `describe` VARCHAR(4096) NOT NULL DEFAULT '',
  `status` VARCHAR(16) NOT NULL,
  `error_message` VARCHAR(2048) NULL,
  `snapshot_name` VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  `create_time` BIGINT UNSIGNED NOT NULL,
  `update_time` BIGINT UNSIGNED NOT NULL,
  `project_id` VARCHAR(32) NOT NULL DEFAULT 'prj-00000000',
  `visibility` VARCHAR(16) NOT NULL DEFAULT 'public',
  `progress` TINYINT UNSIGNED NULL,
  `source_snapshot_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  `source_volume_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  `sha256` CHAR(64) CHARACTER SET ascii NULL,
  PRIMARY KEY (`image_id`),
  KEY `idx_image_name` (`image_name`),
  KEY `idx_image_status` (`status`),
  KEY `idx_image_create_time` (`create_time`, `image_id`),
  KEY `idx_image_project` (`project_id`),
  KEY `idx_image_source_snapshot` (`source_snapshot_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `instance` (
  `instance_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `instance_name` VARCHAR(255) NOT NULL,
  `status` VARCHAR(16) NOT NULL,
  `ip` VARCHAR(45) NULL,
  `host_ip` VARCHAR(255) NOT NULL,
  `host_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `cpu` INT UNSIGNED NOT NULL,
  `memory` BIGINT UNSIGNED NOT NULL,
  `image_id` VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `root_size` BIGINT UNSIGNED NULL,
  `describe` VARCHAR(4096) NOT NULL DEFAULT '',
  `progress` TINYINT UNSIGNED NOT NULL DEFAULT 0,
  `progress_step` VARCHAR(64) NOT NULL DEFAULT '',
  `error_message` VARCHAR(2048) NULL,
  `create_time` BIGINT UNSIGNED NOT NULL,
  `update_time` BIGINT UNSIGNED NOT NULL,
  `project_id` VARCHAR(32) NOT NULL DEFAULT 'prj-00000000',
  PRIMARY KEY (`instance_id`),
  KEY `idx_instance_name` (`instance_name`),
  KEY `idx_instance_status` (`status`),
  KEY `idx_instance_image` (`image_id`),
  KEY `idx_instance_create_time` (`create_time`, `instance_id`),
  KEY `idx_instance_project` (`project_id`),
  KEY `idx_instance_host` (`host_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `volume` (
  `volume_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `volume_name` VARCHAR(255) NOT NULL,
  `volume_size` BIGINT UNSIGNED NOT NULL,
  `status` VARCHAR(16) NOT NULL,
  `instance_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  `is_root` TINYINT(1) NOT NULL DEFAULT 0,
  `target_dev` VARCHAR(16) NULL,
  `describe` VARCHAR(4096) NOT NULL DEFAULT '',
  `error_message` VARCHAR(2048) NULL,
  `attach_time` BIGINT UNSIGNED NULL,
  `create_time` BIGINT UNSIGNED NOT NULL,
  `update_time` BIGINT UNSIGNED NOT NULL,
  `project_id` VARCHAR(32) NOT NULL DEFAULT 'prj-00000000',
  `delete_with_instance` TINYINT(1) NOT NULL DEFAULT 0,
  PRIMARY KEY (`volume_id`),
  UNIQUE KEY `uk_volume_instance_target` (`instance_id`, `target_dev`),
  KEY `idx_volume_name` (`volume_name`),
  KEY `idx_volume_status` (`status`),
  KEY `idx_volume_instance` (`instance_id`),
  KEY `idx_volume_create_time` (`create_time`, `volume_id`),
  KEY `idx_volume_project` (`project_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `network_interface` (
  `network_interface_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `network_interface_name` VARCHAR(255) NOT NULL,
  `mac` CHAR(17) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  `ip` VARCHAR(45) CHARACTER SET ascii COLLATE ascii_bin NULL,
  `bridge` VARCHAR(15) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  `status` VARCHAR(16) NOT NULL,
  `instance_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  `describe` VARCHAR(4096) NOT NULL DEFAULT '',
  `error_message` VARCHAR(2048) NULL,
  `attach_time` BIGINT UNSIGNED NULL,
  `create_time` BIGINT UNSIGNED NOT NULL,
  `update_time` BIGINT UNSIGNED NOT NULL,
  `project_id` VARCHAR(32) NOT NULL DEFAULT 'prj-00000000',
  `delete_with_instance` TINYINT(1) NOT NULL DEFAULT 0,
  PRIMARY KEY (`network_interface_id`),
  UNIQUE KEY `uk_nic_mac` (`mac`),
  UNIQUE KEY `uk_nic_bridge_ip` (`bridge`, `ip`),
  KEY `idx_nic_name` (`network_interface_name`),
  KEY `idx_nic_status` (`status`),
  KEY `idx_nic_instance` (`instance_id`),
  KEY `idx_nic_create_time` (`create_time`, `network_interface_id`),
  KEY `idx_nic_project` (`project_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Long operations that must survive their process: who runs each (owner + a lease it renews),
-- where it is (step) and what it has made or reserved so far (state, JSON), so that another
-- process can finish or undo it when the lease runs out. Times are unix seconds; the lease is
-- in milliseconds.
CREATE TABLE `operation` (
  `operation_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `kind` VARCHAR(64) NOT NULL,
  `resource_id` VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `status` VARCHAR(16) NOT NULL,
  `step` VARCHAR(64) NOT NULL DEFAULT '',
  `state` TEXT NOT NULL,
  `owner` VARCHAR(128) NULL,
  `lease_until_ms` BIGINT UNSIGNED NULL,
  `error_message` VARCHAR(2048) NULL,
  `create_time` BIGINT UNSIGNED NOT NULL,
  `update_time` BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (`operation_id`),
  KEY `idx_operation_kind` (`kind`),
  KEY `idx_operation_status_lease` (`status`, `lease_until_ms`),
  KEY `idx_operation_owner` (`owner`),
  KEY `idx_operation_resource` (`resource_id`),
  KEY `idx_operation_create_time` (`create_time`, `operation_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Who this database is: one row with a random id that api-web writes into the domains and RBD
-- images it makes, so that reconciliation tells its own orphans (marked with this id, no row)
-- from what another deployment sharing the hypervisor or the Ceph pools made.
CREATE TABLE `deployment` (
  `id` TINYINT UNSIGNED NOT NULL DEFAULT 1,
  `deployment_id` CHAR(36) NOT NULL,
  `create_time` BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
INSERT INTO `deployment` (`id`, `deployment_id`, `create_time`) VALUES (1, UUID(), UNIX_TIMESTAMP());

-- Who may call the API: projects (tenants), API keys and users. A key is stored only as the SHA-256 of
-- its secret (a key is 32 random bytes: a slow hash adds nothing against guessing and would cost
-- every request); it has a name, a role, a project, an optional expiry, and can be revoked.
CREATE TABLE `project` (
  `project_id` VARCHAR(32) NOT NULL,
  `project_name` VARCHAR(64) NOT NULL,
  `create_time` BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (`project_id`),
  UNIQUE KEY `uk_project_name` (`project_name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
INSERT INTO `project` (`project_id`, `project_name`, `create_time`)
  VALUES ('prj-00000000', 'default', UNIX_TIMESTAMP());

CREATE TABLE `api_key` (
  `key_id` VARCHAR(32) NOT NULL,
  `key_name` VARCHAR(64) NOT NULL,
  `key_hash` CHAR(64) NOT NULL,
  `role` VARCHAR(16) NOT NULL,
  `project_id` VARCHAR(32) NOT NULL,
  `expire_time` BIGINT UNSIGNED NULL,
  `revoke_time` BIGINT UNSIGNED NULL,
  `create_time` BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (`key_id`),
  UNIQUE KEY `uk_api_key_hash` (`key_hash`),
  KEY `idx_api_key_project` (`project_id`),
  CONSTRAINT `fk_api_key_project` FOREIGN KEY (`project_id`) REFERENCES `project` (`project_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- People who log in (the portal): a password hashed with argon2 (PHC string), a role and a project.
CREATE TABLE `api_user` (
  `user_id` VARCHAR(32) NOT NULL,
  `user_name` VARCHAR(64) NOT NULL,
  `password_hash` VARCHAR(255) NOT NULL,
  `role` VARCHAR(16) NOT NULL,
  `project_id` VARCHAR(32) NOT NULL,
  `disable_time` BIGINT UNSIGNED NULL,
  `create_time` BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (`user_id`),
  UNIQUE KEY `uk_api_user_name` (`user_name`),
  KEY `idx_api_user_project` (`project_id`),
  CONSTRAINT `fk_api_user_project` FOREIGN KEY (`project_id`) REFERENCES `project` (`project_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- What each project may hold (NULL: no limit). Usage is never stored: it is counted from the
-- resource rows under this row's lock, in the transaction that inserts the new row, so it
-- cannot drift and concurrent creates cannot overshoot.
CREATE TABLE `quota` (
  `project_id` VARCHAR(32) NOT NULL,
  `instances` BIGINT UNSIGNED NULL,
  `vcpus` BIGINT UNSIGNED NULL,
  `memory_mib` BIGINT UNSIGNED NULL,
  `volumes` BIGINT UNSIGNED NULL,
  `volume_gib` BIGINT UNSIGNED NULL,
  `network_interfaces` BIGINT UNSIGNED NULL,
  `images` BIGINT UNSIGNED NULL,
  `update_time` BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (`project_id`),
  CONSTRAINT `fk_quota_project` FOREIGN KEY (`project_id`) REFERENCES `project` (`project_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Who did what: every mutating request and every operation outcome. Operation rows carry the
-- request id of the request that started them (and no credential: they run in the background).
CREATE TABLE `audit_log` (
  `audit_id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  `time_ms` BIGINT UNSIGNED NOT NULL,
  `request_id` VARCHAR(128) NOT NULL,
  `credential` VARCHAR(32) NULL,
  `user_name` VARCHAR(64) NULL,
  `project_id` VARCHAR(32) NULL,
  `action` VARCHAR(128) NOT NULL,
  `resource_id` VARCHAR(128) NULL,
  `outcome` VARCHAR(16) NOT NULL,
  `error_code` VARCHAR(64) NULL,
  PRIMARY KEY (`audit_id`),
  KEY `idx_audit_time` (`time_ms`),
  KEY `idx_audit_resource` (`resource_id`, `audit_id`),
  KEY `idx_audit_project` (`project_id`, `audit_id`),
  KEY `idx_audit_request` (`request_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Snapshots: of every disk of an instance taken together (instance_id set), or of one volume on
-- its own (volume_id set). Each covered volume has an RBD snapshot named after snapshot_id,
-- listed in snapshot_volume with the volume's size then (a rollback restores it).
CREATE TABLE `snapshot` (
  `snapshot_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `snapshot_name` VARCHAR(255) NOT NULL,
  `instance_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  `volume_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  `status` VARCHAR(16) NOT NULL,
  `suspended_ms` BIGINT UNSIGNED NULL,
  `error_message` VARCHAR(2048) NULL,
  `create_time` BIGINT UNSIGNED NOT NULL,
  `update_time` BIGINT UNSIGNED NOT NULL,
  `project_id` VARCHAR(32) NOT NULL,
  PRIMARY KEY (`snapshot_id`),
  KEY `idx_snapshot_name` (`snapshot_name`),
  KEY `idx_snapshot_status` (`status`),
  KEY `idx_snapshot_instance` (`instance_id`),
  KEY `idx_snapshot_volume` (`volume_id`),
  KEY `idx_snapshot_create_time` (`create_time`, `snapshot_id`),
  KEY `idx_snapshot_project` (`project_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `snapshot_volume` (
  `snapshot_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `volume_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `volume_size` BIGINT UNSIGNED NOT NULL,
  `is_root` TINYINT(1) NOT NULL DEFAULT 0,
  PRIMARY KEY (`snapshot_id`, `volume_id`),
  KEY `idx_snapshot_volume_volume` (`volume_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Hypervisor hosts: the libvirt URIs instances run on. `status` is what an admin set: enabled,
-- or disabled (maintenance: nothing new is placed there). `online`, `last_contact` and
-- `error_message` are what the last probe found; the facts (CPU, memory, versions, machine
-- types, firmware, KVM) are what libvirt reported then. `host_uuid` is libvirt's host UUID:
-- two URIs reaching one libvirtd are one host. `machine_types`, `firmware` and `tags` are JSON
-- arrays of strings. Placement: `vcpus_used` and `memory_used_mib` are what the host has
-- reserved for its instances (the sum over their rows, changed with them by compare-and-set);
-- `cpu_capacity` and `memory_capacity_mib` an admin's capacity in place of the host's own
-- figures (NULL: `cpus`, `memory_mib`); `bridges` the configured bridges the host has.
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
  `cpu_capacity` INT UNSIGNED NULL,
  `memory_capacity_mib` BIGINT UNSIGNED NULL,
  `vcpus_used` INT UNSIGNED NOT NULL DEFAULT 0,
  `memory_used_mib` BIGINT UNSIGNED NOT NULL DEFAULT 0,
  `bridges` VARCHAR(4096) NOT NULL DEFAULT '[]',
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

-- The migrations this script embodies, as diesel records them.
CREATE TABLE `__diesel_schema_migrations` (
  `version` VARCHAR(50) PRIMARY KEY NOT NULL,
  `run_on` TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO `__diesel_schema_migrations` (`version`) VALUES
  ('20261123000001'),
  ('20261124000001'),
  ('20261125000001'),
  ('20261126000001'),
  ('20261127000001'),
  ('20261128000001'),
  ('20261129000001'),
  ('20261130000001'),
  ('20261205000001'),
  ('20261205000002'),
  ('20261206000001'),
  ('20261206000002'),
  ('20261207000001'),
  ('20261208000001');
