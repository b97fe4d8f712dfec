// Package storetest gives tests a fresh, migrated hearth store on every
// database engine available, so one suite covers SQLite and PostgreSQL.
//
// SQLite always runs (a file in t.TempDir()). PostgreSQL runs when the
// environment variable HEARTH_TEST_POSTGRES_URL holds a postgres:// URL of
// a role that may create schemas; otherwise its subtests are skipped with
// a message. scripts/pgtest.sh starts a private, throw-away cluster and sets
// the variable for the command it runs:
//
//	scripts/pgtest.sh go test ./internal/store/... ./internal/api/...
//
// Every Open on PostgreSQL creates its own schema (dropped at cleanup), so
// tests using it may call t.Parallel.
//
// Typical use, in any package:
//
//	func TestSomething(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, db *store.DB) {
//			t.Parallel()
//			... use db ...
//		})
//	}
//
// or, for one engine, db := storetest.Open(t, storetest.Postgres).
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver for the schema admin connection

	"github.com/hearth-sandbox/hearth/internal/store"
)

// Engine names a database engine; it is also the subtest name.
type Engine string

const (
	SQLite   Engine = store.DriverSQLite
	Postgres Engine = store.DriverPostgres
)

// EnvPostgresURL names the variable that enables the PostgreSQL runs.
const EnvPostgresURL = "HEARTH_TEST_POSTGRES_URL"

// Engines lists every engine, available or not (Open skips the missing).
func Engines() []Engine { return []Engine{SQLite, Postgres} }

// Run runs fn once per engine, as subtests named "sqlite" and "postgres".
func Run(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	for _, e := range Engines() {
		t.Run(string(e), func(t *testing.T) {
			fn(t, Open(t, e))
		})
	}
}

// RunB is Run for benchmarks.
func RunB(b *testing.B, fn func(b *testing.B, db *store.DB)) {
	b.Helper()
	for _, e := range Engines() {
		b.Run(string(e), func(b *testing.B) {
			fn(b, Open(b, e))
		})
	}
}

// Open returns a fresh, migrated store on engine e with an AES sealer
// (random key), closed and deleted when tb ends. It skips tb when e is
// PostgreSQL and EnvPostgresURL is unset, and fails it when the server set
// there cannot be used.
func Open(tb testing.TB, e Engine) *store.DB {
	tb.Helper()
	return OpenWith(tb, Options(tb, e))
}

// OpenWith opens a store with opts (from Options, possibly changed) and
// closes it when tb ends. Opening the same Options twice reaches the same
// database.
func OpenWith(tb testing.TB, opts store.Options) *store.DB {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := store.Open(ctx, opts)
	if err != nil {
		tb.Fatalf("storetest: open %s: %v", opts.Driver, err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// Options describes a fresh, empty database on engine e (deleted when tb
// ends) with an AES sealer under a random key, without opening it. Skips
// like Open.
func Options(tb testing.TB, e Engine) store.Options {
	tb.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails
	sealer, err := store.NewAESSealer(key)
	if err != nil {
		tb.Fatal(err)
	}
	opts := store.Options{Driver: string(e), Sealer: sealer}
	switch e {
	case SQLite:
		opts.DSN = filepath.Join(tb.TempDir(), "hearth.db")
	case Postgres:
		opts.DSN = freshSchema(tb)
	default:
		tb.Fatalf("storetest: unknown engine %q", e)
	}
	return opts
}

// freshSchema creates an empty schema on the server named by
// EnvPostgresURL and returns a URL whose search_path is that schema.
// Cleanup drops it.
func freshSchema(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(EnvPostgresURL)
	if base == "" {
		tb.Skipf("PostgreSQL: set %s to a postgres:// URL, or run under scripts/pgtest.sh (e.g. scripts/pgtest.sh go test ./internal/store/...)", EnvPostgresURL)
	}
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("storetest: %s: %v", EnvPostgresURL, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	schema := "hearth_test_" + hex.EncodeToString(rnd[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := sql.Open("pgx", base)
	if err != nil {
		tb.Fatalf("storetest: %v", err)
	}
	defer admin.Close()
	// The name is generated above from hex digits: safe to splice.
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		tb.Fatalf("storetest: create schema on %s: %v", EnvPostgresURL, err)
	}
	// Registered before Open's cleanup, so it runs after the store closed.
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := sql.Open("pgx", base)
		if err != nil {
			tb.Errorf("storetest: %v", err)
			return
		}
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			tb.Errorf("storetest: drop schema %s: %v", schema, err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
