-- An image made by copying (from a snapshot) shows how far the copy is (`progress`, percent,
-- NULL when no copy runs) and where it came from: the snapshot and the volume of it that was
-- copied. A snapshot an image is being copied from cannot be deleted.
ALTER TABLE `image`
  ADD COLUMN `progress` TINYINT UNSIGNED NULL,
  ADD COLUMN `source_snapshot_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  ADD COLUMN `source_volume_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  ADD KEY `idx_image_source_snapshot` (`source_snapshot_id`);
