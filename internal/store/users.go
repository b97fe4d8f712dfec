package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"
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

// ErrLastOwner: the change would leave a team without an owner (removing
// or demoting its only one). Every team keeps at least one owner, so some
// person can always manage it.
var ErrLastOwner = errors.New("last owner of the team")

// TeamMember is a membership as the team sees it.
type TeamMember struct {
	UserID   string
	Email    string
	Role     Role
	JoinedAt time.Time
}

const memberSelect = `SELECT u.id, u.email, ut.role, ut.created_at
FROM users_teams ut JOIN users u ON u.id = ut.user_id`

func scanMember(r interface{ Scan(...any) error }) (TeamMember, error) {
	var (
		m    TeamMember
		at   timeCol
		role string
	)
	err := r.Scan(&m.UserID, &m.Email, &role, &at)
	m.Role, m.JoinedAt = Role(role), at.t
	return m, err
}

// ListTeamMembers returns the team's members, earliest first. An unknown
// team has none.
func (db *DB) ListTeamMembers(ctx context.Context, teamID string) ([]TeamMember, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(memberSelect+` WHERE ut.team_id = ? ORDER BY ut.created_at, u.id`), teamID)
	if err != nil {
		return nil, wrap("list team members", err)
	}
	out, err := collect(rows, scanMember)
	return out, wrap("list team members", err)
}

func getMember(ctx context.Context, db *DB, q queryer, teamID, userID string) (TeamMember, error) {
	return scanMember(q.QueryRowContext(ctx, db.q(memberSelect+` WHERE ut.team_id = ? AND ut.user_id = ?`), teamID, userID))
}

// AddTeamMember makes an existing user a member of an existing team.
// Unknown user or team: ErrNotFound; already a member: ErrConflict.
func (db *DB) AddTeamMember(ctx context.Context, teamID, userID string, role Role) (TeamMember, error) {
	var m TeamMember
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		// INSERT ... SELECT inserts nothing when either row is missing, so
		// both engines answer "not found" the same way instead of with
		// their own foreign-key errors.
		res, err := tx.ExecContext(ctx, db.q(`INSERT INTO users_teams (user_id, team_id, role, created_at)
SELECT u.id, t.id, ?, ? FROM users u, teams t WHERE u.id = ? AND t.id = ?`),
			string(role), db.ts(now()), userID, teamID)
		if err != nil {
			return err
		}
		if err := affected(res); err != nil {
			return err
		}
		m, err = getMember(ctx, db, tx, teamID, userID)
		return err
	})
	return m, wrap("add team member", err)
}

// SetTeamMemberRole changes a member's role. Not a member: ErrNotFound;
// demoting the team's only owner: ErrLastOwner.
func (db *DB) SetTeamMemberRole(ctx context.Context, teamID, userID string, role Role) (TeamMember, error) {
	var m TeamMember
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if role != RoleOwner {
			if err := db.keepAnOwner(ctx, tx, teamID, userID); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, db.q(`UPDATE users_teams SET role = ? WHERE team_id = ? AND user_id = ?`),
			string(role), teamID, userID)
		if err != nil {
			return err
		}
		if err := affected(res); err != nil {
			return err
		}
		m, err = getMember(ctx, db, tx, teamID, userID)
		return err
	})
	return m, wrap("set team member role", err)
}

// RemoveTeamMember removes a membership. Not a member: ErrNotFound; the
// team's only owner: ErrLastOwner.
func (db *DB) RemoveTeamMember(ctx context.Context, teamID, userID string) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := db.keepAnOwner(ctx, tx, teamID, userID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, db.q(`DELETE FROM users_teams WHERE team_id = ? AND user_id = ?`), teamID, userID)
		if err != nil {
			return err
		}
		if err := affected(res); err != nil {
			return err
		}
		// Keys outlive nobody's membership: whoever leaves a team takes
		// the keys they made for it with them.
		_, err = tx.ExecContext(ctx, db.q(`DELETE FROM team_api_keys WHERE team_id = ? AND created_by = ?`), teamID, userID)
		return err
	})
	return wrap("remove team member", err)
}

// keepAnOwner fails with ErrLastOwner when userID is the team's only owner,
// i.e. when taking the owner role from them would leave none. The owner
// rows stay locked until the transaction ends, so two owners demoting each
// other at once cannot both pass the check: on PostgreSQL by FOR UPDATE
// (the second waits, then re-reads the first's change), on SQLite because
// write transactions begin IMMEDIATE and so run one at a time.
func (db *DB) keepAnOwner(ctx context.Context, tx *sql.Tx, teamID, userID string) error {
	q := `SELECT user_id FROM users_teams WHERE team_id = ? AND role = ?`
	if db.driver == DriverPostgres {
		q += ` FOR UPDATE`
	}
	rows, err := tx.QueryContext(ctx, db.q(q), teamID, string(RoleOwner))
	if err != nil {
		return err
	}
	owners, err := collect(rows, func(r interface{ Scan(...any) error }) (string, error) {
		var id string
		return id, r.Scan(&id)
	})
	if err != nil {
		return err
	}
	if len(owners) == 1 && owners[0] == userID {
		return ErrLastOwner
	}
	return nil
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
