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
