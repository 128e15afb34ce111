-- One database per service: each owns its tables, its inbox and its outbox,
-- and shares nothing with the others but the bus. Run once, by the postgres
-- image, when its data directory is created (docker-compose.yml mounts this
-- file into /docker-entrypoint-initdb.d).
CREATE DATABASE orders;
CREATE DATABASE payment;
CREATE DATABASE inventory;
CREATE DATABASE notify;
