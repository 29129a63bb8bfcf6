DROP TABLE `operation`;
