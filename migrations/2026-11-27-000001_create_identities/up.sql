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
