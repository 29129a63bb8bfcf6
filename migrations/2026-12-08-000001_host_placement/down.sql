ALTER TABLE `host`
  DROP COLUMN `bridges`,
  DROP COLUMN `memory_used_mib`,
  DROP COLUMN `vcpus_used`,
  DROP COLUMN `memory_capacity_mib`,
  DROP COLUMN `cpu_capacity`;
