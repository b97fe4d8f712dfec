package store

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"time"

	"github.com/pressly/goose/v3/lock"
	"golang.org/x/sys/unix"
)

// Control planes that start together on one database must not run the
// same migration twice. PostgreSQL: a session advisory lock (goose's
// session locker) whose ID is derived from the schema migrations apply to,
// so stores in different schemas (tests, several installations on one
// server) never wait for each other. SQLite: an flock on a file beside the
// database, since goose has no SQLite locker and two processes may open
// one file.

func (db *DB) postgresMigrationLocker(ctx context.Context) (lock.SessionLocker, error) {
	var schema string
	if err := db.sql.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return nil, fmt.Errorf("store: migrations: current schema: %w", err)
	}
	h := fnv.New64a()
	h.Write([]byte("hearth-migrations:" + schema))
	// Poll every second for up to 5 minutes: a peer's migrations take
	// well under a second, and a stuck peer surfaces as an error.
	l, err := lock.NewPostgresSessionLocker(lock.WithLockID(int64(h.Sum64()>>1)), lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, fmt.Errorf("store: migrations: %w", err)
	}
	return l, nil
}

// lockSQLiteMigrations takes an exclusive flock on "<database>.migrate.lock"
// and returns its release. The wait honours ctx.
func lockSQLiteMigrations(ctx context.Context, dsn string) (func(), error) {
	path := strings.TrimPrefix(dsn, "file:")
	if i := strings.IndexByte(path, '?'); i >= 0 && strings.HasPrefix(dsn, "file:") {
		path = path[:i]
	}
	if path == "" || path == ":memory:" {
		return func() {}, nil // nobody else can open it
	}
	f, err := os.OpenFile(path+".migrate.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: migrations lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("store: migrations lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("store: waiting for another process's migrations of %s: %w", path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
