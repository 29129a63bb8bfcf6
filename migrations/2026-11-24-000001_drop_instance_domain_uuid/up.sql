-- The domain's UUID was written at create and never read: the domain is found by its name (the
-- instance_id) and carries the instance_id in its <metadata>.
ALTER TABLE `instance` DROP COLUMN `domain_uuid`;
