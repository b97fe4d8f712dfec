package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Engine names accepted by Options.Driver.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrationsFS embed.FS

// Options select and configure the engine.
type Options struct {
	// Driver is DriverSQLite or DriverPostgres. Empty: DriverPostgres when
	// DSN starts with postgres:// or postgresql://, else DriverSQLite.
	Driver string
	// DSN is a postgres:// URL, or the path of the SQLite database file
	// (created if missing; its directory must exist), or a file: URI.
	DSN string
	// Sealer encrypts the sandbox columns holding secrets (access token,
	// environment). Required unless InsecurePlaintext is set.
	Sealer Sealer
	// InsecurePlaintext stores secrets unencrypted when Sealer is nil. Only
	// for tests that inspect raw rows; never set it in a server.
	InsecurePlaintext bool
	// MaxOpenConns bounds the pool; 0 picks a per-engine default.
	MaxOpenConns int
	// Logger receives migration progress; nil discards it.
	Logger *slog.Logger
}

// DB is the store on one engine. It is safe for concurrent use.
type DB struct {
	sql    *sql.DB
	driver string
	sealer Sealer
	log    *slog.Logger

	// queries caches ?-to-$n rewrites for PostgreSQL (string -> string).
	queries sync.Map

	// signupHook, when set (tests only, see export_test.go), runs after each
	// step of CreateUserWithTeam so a test can fail the transaction midway.
	signupHook func(step string) error
}

// Open connects to the engine chosen by opts and applies pending migrations.
func Open(ctx context.Context, opts Options) (*DB, error) {
	driver := opts.Driver
	if driver == "" {
		driver = DriverSQLite
		if IsPostgresURL(opts.DSN) {
			driver = DriverPostgres
		}
	}
	if opts.DSN == "" {
		return nil, errors.New("store: empty DSN")
	}
	if opts.Sealer == nil && !opts.InsecurePlaintext {
		return nil, errors.New("store: a Sealer is required (InsecurePlaintext is for tests only)")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	var (
		sqldb   *sql.DB
		dialect goose.Dialect
		err     error
	)
	switch driver {
	case DriverSQLite:
		sqldb, err = sql.Open("sqlite", sqliteDSN(opts.DSN))
		dialect = goose.DialectSQLite3
		// SQLite has one writer at a time; WAL lets readers proceed while it
		// writes and busy_timeout makes writers queue instead of failing
		// with SQLITE_BUSY. A small pool keeps the queue short.
		maxConns(sqldb, opts.MaxOpenConns, 4)
	case DriverPostgres:
		sqldb, err = sql.Open("pgx", opts.DSN)
		dialect = goose.DialectPostgres
		maxConns(sqldb, opts.MaxOpenConns, 16)
	default:
		return nil, fmt.Errorf("store: unknown driver %q", driver)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", driver, err)
	}
	db := &DB{sql: sqldb, driver: driver, sealer: opts.Sealer, log: log}
	if err := db.migrate(ctx, dialect, opts.DSN); err != nil {
		sqldb.Close()
		return nil, err
	}
	return db, nil
}

// IsPostgresURL reports whether dsn names a PostgreSQL server.
func IsPostgresURL(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

func maxConns(db *sql.DB, n, def int) {
	if n <= 0 {
		n = def
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
}

// sqliteDSN turns a file path into a modernc DSN with the pragmas every
// connection needs. _txlock=immediate makes BEGIN take the write lock at
// once, so a transaction never fails upgrading a read lock (SQLITE_BUSY
// that busy_timeout cannot resolve).
func sqliteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	// A file: URI may carry its own parameters; a plain path may not
	// contain '?'.
	if strings.HasPrefix(path, "file:") {
		if strings.Contains(path, "?") {
			return path + "&" + q.Encode()
		}
		return path + "?" + q.Encode()
	}
	return "file:" + path + "?" + q.Encode()
}

func (db *DB) migrate(ctx context.Context, dialect goose.Dialect, dsn string) error {
	sub, err := fs.Sub(migrationsFS, "migrations/"+db.driver)
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	popts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	switch db.driver {
	case DriverPostgres:
		locker, err := db.postgresMigrationLocker(ctx)
		if err != nil {
			return err
		}
		popts = append(popts, goose.WithSessionLocker(locker))
	case DriverSQLite:
		unlock, err := lockSQLiteMigrations(ctx, dsn)
		if err != nil {
			return err
		}
		defer unlock()
	}
	p, err := goose.NewProvider(dialect, db.sql, sub, popts...)
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("store: migrate %s: %w", db.driver, err)
	}
	for _, r := range results {
		db.log.Info("store migration applied", "driver", db.driver, "version", r.Source.Version, "duration", r.Duration)
	}
	return nil
}

// Close releases the connection pool.
func (db *DB) Close() error { return db.sql.Close() }

// Driver is DriverSQLite or DriverPostgres.
func (db *DB) Driver() string { return db.driver }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.sql.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// q returns query with ? placeholders rewritten for the engine.
func (db *DB) q(query string) string {
	if db.driver != DriverPostgres {
		return query
	}
	if v, ok := db.queries.Load(query); ok {
		return v.(string)
	}
	r := rebind(query)
	db.queries.Store(query, r)
	return r
}

// rebind turns ? placeholders into $1, $2... outside single-quoted literals.
func rebind(query string) string {
	var b strings.Builder
	b.Grow(len(query) + 16)
	n, inStr := 0, false
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'':
			inStr = !inStr
		case c == '?' && !inStr:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// queryer is what both *sql.DB and *sql.Tx offer.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// inTx runs fn in a transaction, committing when it returns nil.
func (db *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // the error of fn is the one that matters
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", mapErr(err))
	}
	return nil
}

// mapErr turns engine-specific unique violations into ErrConflict and
// sql.ErrNoRows into ErrNotFound, keeping the original in the chain.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
		return fmt.Errorf("%w: %s", ErrConflict, pgErr.ConstraintName)
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		switch sqErr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %v", ErrConflict, sqErr)
		}
	}
	return err
}

// wrap adds the operation to a mapped error. Sentinels stay matchable with
// errors.Is.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store: %s: %w", op, mapErr(err))
}

// affected returns ErrNotFound when res changed no row.
func affected(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// Time handling. Every timestamp is UTC, truncated to the microsecond so it
// round-trips exactly: PostgreSQL timestamptz has microsecond resolution and
// SQLite stores a fixed-width text form that also sorts chronologically.
const sqliteTimeLayout = "2006-01-02T15:04:05.000000Z"

func now() time.Time { return normTime(time.Now()) }

func normTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// ts converts a time into the engine's parameter form.
func (db *DB) ts(t time.Time) any {
	t = normTime(t)
	if db.driver == DriverSQLite {
		return t.Format(sqliteTimeLayout)
	}
	return t
}

// tsOrNull is ts, with the zero time stored as NULL.
func (db *DB) tsOrNull(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return db.ts(t)
}

// timeCol scans a timestamp column of either engine; NULL gives zero time.
type timeCol struct{ t time.Time }

func (c *timeCol) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		c.t = time.Time{}
	case time.Time:
		c.t = x.UTC()
	case string:
		return c.parse(x)
	case []byte:
		return c.parse(string(x))
	default:
		return fmt.Errorf("store: cannot scan %T into a time", v)
	}
	return nil
}

func (c *timeCol) parse(s string) error {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("store: bad time %q: %w", s, err)
	}
	c.t = t.UTC()
	return nil
}

func (c timeCol) ptr() *time.Time {
	if c.t.IsZero() {
		return nil
	}
	t := c.t
	return &t
}

// inList returns "?, ?, ?" for n parameters.
func inList(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func newUUID() string { return uuid.NewString() }

// dnsSafe is lowercase base32 without padding: letters and digits only.
var dnsSafe = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewShortID returns a random 20-character ID of lowercase letters and
// digits (100 bits), safe inside a DNS label. Used for sandboxes and
// templates when the caller leaves the ID empty.
func NewShortID() string {
	var b [13]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return dnsSafe.EncodeToString(b[:])[:20]
}
