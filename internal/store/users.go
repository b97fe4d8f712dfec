package store

import (
	"context"
	"database/sql"
	"strings"
)

// Users, teams and memberships.

const userCols = `id, email, password_hash, is_admin, created_at`

func scanUser(r interface{ Scan(...any) error }) (User, error) {
	var (
		u  User
		at timeCol
	)
	err := r.Scan(&u.ID, &u.Email, &u.PasswordHash, &u.IsAdmin, &at)
	u.CreatedAt = at.t
	return u, err
}

// normEmail is the one spelling of an address the table holds, so the
// UNIQUE constraint is case-insensitive.
func normEmail(e string) string { return strings.ToLower(strings.TrimSpace(e)) }

// CreateUserWithTeam inserts the user, a team named teamName and an owner
// membership in one transaction. Empty IDs and times are filled in.
// Duplicate email: ErrConflict.
func (db *DB) CreateUserWithTeam(ctx context.Context, u User, teamName string) (User, Team, error) {
	u.Email = normEmail(u.Email)
	if u.ID == "" {
		u.ID = newUUID()
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = now()
	}
	u.CreatedAt = normTime(u.CreatedAt)
	t := Team{ID: newUUID(), Name: teamName, CreatedAt: u.CreatedAt}

	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO users (`+userCols+`) VALUES (?, ?, ?, ?, ?)`),
			u.ID, u.Email, u.PasswordHash, u.IsAdmin, db.ts(u.CreatedAt)); err != nil {
			return wrap("create user", err)
		}
		if err := db.hook("user"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO teams (id, name, created_at) VALUES (?, ?, ?)`),
			t.ID, t.Name, db.ts(t.CreatedAt)); err != nil {
			return wrap("create team", err)
		}
		if err := db.hook("team"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO users_teams (user_id, team_id, role, created_at) VALUES (?, ?, ?, ?)`),
			u.ID, t.ID, string(RoleOwner), db.ts(u.CreatedAt)); err != nil {
			return wrap("create membership", err)
		}
		return db.hook("membership")
	})
	if err != nil {
		return User{}, Team{}, err
	}
	return u, t, nil
}

func (db *DB) hook(step string) error {
	if db.signupHook == nil {
		return nil
	}
	return db.signupHook(step)
}

func (db *DB) GetUserByEmail(ctx context.Context, email string) (User, error) {
	u, err := scanUser(db.sql.QueryRowContext(ctx, db.q(`SELECT `+userCols+` FROM users WHERE email = ?`), normEmail(email)))
	return u, wrap("get user", err)
}

func (db *DB) GetUserByID(ctx context.Context, id string) (User, error) {
	u, err := scanUser(db.sql.QueryRowContext(ctx, db.q(`SELECT `+userCols+` FROM users WHERE id = ?`), id))
	return u, wrap("get user", err)
}

// SetUserAdmin grants or revokes platform admin. Unknown email: ErrNotFound.
func (db *DB) SetUserAdmin(ctx context.Context, email string, admin bool) error {
	res, err := db.sql.ExecContext(ctx, db.q(`UPDATE users SET is_admin = ? WHERE email = ?`), admin, normEmail(email))
	if err != nil {
		return wrap("set admin", err)
	}
	return wrap("set admin", affected(res))
}

const membershipSelect = `SELECT t.id, t.name, t.created_at, ut.role
FROM users_teams ut JOIN teams t ON t.id = ut.team_id`

func scanMembership(r interface{ Scan(...any) error }) (TeamMembership, error) {
	var (
		m    TeamMembership
		at   timeCol
		role string
	)
	err := r.Scan(&m.ID, &m.Name, &at, &role)
	m.CreatedAt, m.Role = at.t, Role(role)
	return m, err
}

// ListTeamsForUser returns the user's teams, oldest membership first.
func (db *DB) ListTeamsForUser(ctx context.Context, userID string) ([]TeamMembership, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(membershipSelect+` WHERE ut.user_id = ? ORDER BY ut.created_at, t.id`), userID)
	if err != nil {
		return nil, wrap("list teams", err)
	}
	out, err := collect(rows, scanMembership)
	return out, wrap("list teams", err)
}

// GetMembership returns ErrNotFound when the user is not in the team.
func (db *DB) GetMembership(ctx context.Context, teamID, userID string) (TeamMembership, error) {
	m, err := scanMembership(db.sql.QueryRowContext(ctx, db.q(membershipSelect+` WHERE ut.team_id = ? AND ut.user_id = ?`), teamID, userID))
	return m, wrap("get membership", err)
}

// GetTeam returns a team by ID.
func (db *DB) GetTeam(ctx context.Context, id string) (Team, error) {
	var (
		t  Team
		at timeCol
	)
	err := db.sql.QueryRowContext(ctx, db.q(`SELECT id, name, created_at FROM teams WHERE id = ?`), id).Scan(&t.ID, &t.Name, &at)
	t.CreatedAt = at.t
	return t, wrap("get team", err)
}

// collect scans every row with scan and closes rows.
func collect[T any](rows *sql.Rows, scan func(interface{ Scan(...any) error }) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
