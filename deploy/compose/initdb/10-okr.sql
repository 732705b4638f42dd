-- The server-side statement timeout. Behind PgBouncer the service sends no startup
-- parameters (PgBouncer 1.18 refuses those it does not track), so the role carries it;
-- every client still gives up two seconds after it (OKR_DB_STATEMENT_TIMEOUT_SECONDS).
ALTER ROLE okr SET statement_timeout = '15s';
