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
