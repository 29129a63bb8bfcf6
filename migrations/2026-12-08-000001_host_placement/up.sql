-- Placement: what each host has reserved for the instances on it (`vcpus_used`,
-- `memory_used_mib`: the sum over its instance rows, changed in the transaction that inserts,
-- deletes, reshapes or moves an instance, by a compare-and-set that also checks the capacity),
-- the capacity an admin may set in place of the host's own figures (`cpu_capacity`,
-- `memory_capacity_mib`; NULL: the host's `cpus` and `memory_mib`), and the configured
-- bridges the host has (`bridges`, a JSON array the probe keeps).
ALTER TABLE `host`
  ADD COLUMN `cpu_capacity` INT UNSIGNED NULL AFTER `kvm`,
  ADD COLUMN `memory_capacity_mib` BIGINT UNSIGNED NULL AFTER `cpu_capacity`,
  ADD COLUMN `vcpus_used` INT UNSIGNED NOT NULL DEFAULT 0 AFTER `memory_capacity_mib`,
  ADD COLUMN `memory_used_mib` BIGINT UNSIGNED NOT NULL DEFAULT 0 AFTER `vcpus_used`,
  ADD COLUMN `bridges` VARCHAR(4096) NOT NULL DEFAULT '[]' AFTER `memory_used_mib`;

UPDATE `host` h SET
  h.`vcpus_used` = (SELECT COALESCE(SUM(i.`cpu`), 0) FROM `instance` i WHERE i.`host_id` = h.`host_id`),
  h.`memory_used_mib` = (SELECT COALESCE(SUM(i.`memory`), 0) FROM `instance` i WHERE i.`host_id` = h.`host_id`);
