package service

import (
	"errors"
	"net/mail"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
)

// Input bounds of the public contract (issue 2) beyond a sandbox's shape
// (package sandbox). Out of bounds → 400 naming the field.
const (
	DefaultTimeoutS          = 300
	MinTimeoutS, MaxTimeoutS = 1, 86400 // a day, like E2B's longest plan
	MinPasswordLen           = 8
	// bcrypt reads 72 bytes; refusing longer passwords beats truncating them.
	MaxPasswordBytes = 72
	maxEmailLen      = 254
	maxEnvEntries    = 256
	maxMetaEntries   = 64
	maxMetaLen       = 1024
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9\-_.]{0,62}$`)

func validName(field, name string) error {
	if !nameRE.MatchString(name) {
		return InvalidArgument(field, "must match [a-z0-9][a-z0-9-_.]{0,62}")
	}
	return nil
}

func inRange(field string, v, lo, hi int) error {
	return fieldErr(sandbox.InRange(field, v, lo, hi))
}

// validShape checks a sandbox's vCPUs, memory and disk (sandbox.Shape).
func validShape(s sandbox.Shape) error { return fieldErr(s.Validate(sandbox.Public())) }

// fieldErr turns the sandbox contract's bound errors into 400s.
func fieldErr(err error) error {
	var fe *sandbox.FieldError
	if errors.As(err, &fe) {
		return InvalidArgument(fe.Field, "%s", fe.Msg)
	}
	return err
}

// normEmail validates and lower-cases an address of the form local@domain
// (no display names, no comments).
func normEmail(raw string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(raw))
	if e == "" || len(e) > maxEmailLen {
		return "", InvalidArgument("email", "must be a valid email address")
	}
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return "", InvalidArgument("email", "must be a valid email address")
	}
	at := strings.LastIndexByte(e, '@')
	if at < 1 || at == len(e)-1 {
		return "", InvalidArgument("email", "must be a valid email address")
	}
	return e, nil
}

func validPassword(pw string) error {
	if utf8.RuneCountInString(pw) < MinPasswordLen {
		return InvalidArgument("password", "must be at least %d characters", MinPasswordLen)
	}
	if len(pw) > MaxPasswordBytes {
		return InvalidArgument("password", "must be at most %d bytes", MaxPasswordBytes)
	}
	return nil
}

func validMap(field string, m map[string]string, maxEntries int) error {
	if len(m) > maxEntries {
		return InvalidArgument(field, "at most %d entries", maxEntries)
	}
	for k, v := range m {
		if k == "" || len(k) > maxMetaLen || len(v) > 64*maxMetaLen {
			return InvalidArgument(field, "keys must be 1-%d bytes, values at most %d bytes", maxMetaLen, 64*maxMetaLen)
		}
	}
	return nil
}

func validEnv(field string, m map[string]string) error {
	if err := validMap(field, m, maxEnvEntries); err != nil {
		return err
	}
	for k := range m {
		if strings.ContainsAny(k, "=\x00") {
			return InvalidArgument(field, "variable names may not contain '=' or NUL")
		}
	}
	return nil
}
