-- Every resource belongs to a project; rows made before projects go to `default`. Images are
-- `public` (made by an admin: every project may boot them) or `private` to their project.
ALTER TABLE `image`
  ADD COLUMN `project_id` VARCHAR(32) NOT NULL DEFAULT 'prj-00000000',
  ADD COLUMN `visibility` VARCHAR(16) NOT NULL DEFAULT 'public',
  ADD KEY `idx_image_project` (`project_id`);
ALTER TABLE `instance`
  ADD COLUMN `project_id` VARCHAR(32) NOT NULL DEFAULT 'prj-00000000',
  ADD KEY `idx_instance_project` (`project_id`);
ALTER TABLE `volume`
  ADD COLUMN `project_id` VARCHAR(32) NOT NULL DEFAULT 'prj-00000000',
  ADD KEY `idx_volume_project` (`project_id`);
ALTER TABLE `network_interface`
  ADD COLUMN `project_id` VARCHAR(32) NOT NULL DEFAULT 'prj-00000000',
  ADD KEY `idx_nic_project` (`project_id`);
