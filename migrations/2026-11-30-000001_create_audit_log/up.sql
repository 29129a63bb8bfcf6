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
