package store

import "database/sql"

// Test-only access for the external store_test package.

// SetSignupHook makes CreateUserWithTeam call f after each step ("user",
// "team", "membership") and abort the transaction when f fails.
func SetSignupHook(db *DB, f func(step string) error) { db.signupHook = f }

// RawSQL exposes the pool, to inspect what is stored in a column.
func RawSQL(db *DB) *sql.DB { return db.sql }

// Q rewrites placeholders for db's engine.
func Q(db *DB, query string) string { return db.q(query) }

var Rebind = rebind
