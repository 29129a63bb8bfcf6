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
