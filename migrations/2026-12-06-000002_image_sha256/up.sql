-- An uploaded image records the SHA-256 of the file received (hex), NULL for other images.
ALTER TABLE `image`
  ADD COLUMN `sha256` CHAR(64) CHARACTER SET ascii NULL;
