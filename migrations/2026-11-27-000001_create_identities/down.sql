DROP TABLE `api_user`;
DROP TABLE `api_key`;
DROP TABLE `project`;
