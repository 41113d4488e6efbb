// Package drivers registers the database/sql drivers meter.Open uses:
// pgx for PostgreSQL and modernc's pure-Go SQLite. A program that opens a
// ledger imports it for that side effect; one that only speaks the API
// (the client package, the CLI's client commands) then links no database
// driver.
package drivers

import (
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"
)
