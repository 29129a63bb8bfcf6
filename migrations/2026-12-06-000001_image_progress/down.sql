ALTER TABLE `image`
  DROP KEY `idx_image_source_snapshot`,
  DROP COLUMN `source_volume_id`,
  DROP COLUMN `source_snapshot_id`,
  DROP COLUMN `progress`;
