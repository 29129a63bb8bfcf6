DROP TABLE `deployment`;
