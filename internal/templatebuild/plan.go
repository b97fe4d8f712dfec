// Package templatebuild builds hearth templates on a host: from a hearth
// template's root disk or an OCI image (pulled with go-containerregistry,
// layers applied in order with whiteouts), through a list of steps (RUN in
// a real microVM of the image being built; COPY, WORKDIR on the disk
// itself; ENV and USER as metadata), into a flattened ext4 root disk.
//
// Every step's result is cached under a key of (parent key, the step, the
// content hash of the files it copies), so an unchanged rebuild reuses
// every step and a changed step rebuilds from there on.
//
// Front ends (a Dockerfile, the E2B Template SDK's step list, hearth's own
// API) all produce a Plan. The package is host side: it knows nothing of
// teams, stores or HTTP.
package templatebuild

import (
	"fmt"
	"strings"
)

// Step kinds. They are the E2B Template SDK's step types; a Dockerfile's
// instructions map onto them.
const (
	StepRun     = "RUN"
	StepCopy    = "COPY"
	StepEnv     = "ENV"
	StepWorkdir = "WORKDIR"
	StepUser    = "USER"
)

// Plan is what to build.
type Plan struct {
	// FromTemplate names a hearth template (its root disk is resolved by the
	// caller into Source.Disk); FromImage is an OCI image reference. Exactly
	// one is set.
	FromTemplate string
	FromImage    string
	Steps        []Step
	// StartCmd runs (as the template's user, in its workdir, with its env)
	// when the template is snapshotted; ReadyCmd is a shell command that
	// exits 0 once the start command is ready.
	StartCmd string
	ReadyCmd string
	// Notes are things accepted but without effect here (EXPOSE,
	// HEALTHCHECK, VOLUME...), reported in the build log.
	Notes []string
}

// Step is one build step.
type Step struct {
	Type string
	// Args by type. RUN: one shell command (Exec false) or an argv (Exec
	// true). COPY: sources..., destination. ENV: key, value, key, value...
	// WORKDIR: the directory. USER: the user name.
	Args []string
	Exec bool
	// ArgEnv (RUN): KEY=VALUE of Dockerfile ARGs, visible to the command
	// only (not baked into the template's environment).
	ArgEnv []string
	// Chown (COPY): user[:group] owning the copied files.
	Chown string
	// Mode (COPY): octal permissions for the copied files ("" keeps theirs).
	Mode string
	// User (RUN): run as this user instead of the current USER.
	User string
	// Context (COPY): the directory the sources are relative to.
	Context string
	// FilesHash (COPY): the content hash of the sources; computed when empty.
	FilesHash string
	// Force rebuilds this step (and so every later one) ignoring the cache.
	Force bool
	// Line in the Dockerfile, for messages (0: not from a Dockerfile).
	Line int
}

// String is the step as a build log shows it.
func (s Step) String() string {
	switch s.Type {
	case StepRun:
		if s.Exec {
			return fmt.Sprintf("RUN %q", s.Args)
		}
	case StepCopy:
		if s.Chown != "" {
			return "COPY --chown=" + s.Chown + " " + strings.Join(s.Args, " ")
		}
	}
	return s.Type + " " + strings.Join(s.Args, " ")
}

// Config is the runtime configuration a template carries: what a
// sandbox's processes get by default. Steps change it as they go.
type Config struct {
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"`
	User    string            `json:"user,omitempty"`
}

func (c Config) clone() Config {
	env := make(map[string]string, len(c.Env))
	for k, v := range c.Env {
		env[k] = v
	}
	c.Env = env
	return c
}

// envList is Env as sorted KEY=VALUE strings (stable for cache keys).
func (c Config) envList() []string {
	out := make([]string, 0, len(c.Env))
	for k, v := range c.Env {
		out = append(out, k+"="+v)
	}
	sortStrings(out)
	return out
}
