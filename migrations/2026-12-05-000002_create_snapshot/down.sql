DROP TABLE `snapshot_volume`;
DROP TABLE `snapshot`;
