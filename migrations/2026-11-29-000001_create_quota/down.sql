DROP TABLE `quota`;
