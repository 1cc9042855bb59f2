-- piste's accounts: one row per sign-up, the password as an Argon2 hash.
-- IF NOT EXISTS: databases made before piste had migrations already have the table.
CREATE TABLE IF NOT EXISTS users (
    id serial PRIMARY KEY,
    email text UNIQUE NOT NULL,
    password_hash text NOT NULL
);
