DROP TABLE `network_interface`;
DROP TABLE `volume`;
DROP TABLE `instance`;
DROP TABLE `image`;
