package templatebuild

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// SyntaxError is a Dockerfile the build cannot accept; Line is 1-based
// (0 when the parser gave no location).
type SyntaxError struct {
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("Dockerfile line %d: %s", e.Line, e.Msg)
	}
	return "Dockerfile: " + e.Msg
}

// ParseDockerfile turns a Dockerfile into a Plan. contextDir is where
// COPY/ADD sources are read from; buildArgs override ARG defaults.
// Parsing is moby/buildkit's parser; this maps its instructions onto steps.
func ParseDockerfile(data []byte, contextDir string, buildArgs map[string]string) (Plan, error) {
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		se := &SyntaxError{Msg: err.Error()}
		var le *parser.LocationError
		if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
			se.Line = le.Locations[0][0].Start.Line
		}
		return Plan{}, se
	}
	d := dfState{ctx: contextDir, args: map[string]string{}, env: map[string]string{}, buildArgs: buildArgs, lex: shell.NewLex(res.EscapeToken)}
	for _, n := range res.AST.Children {
		if err := d.instruction(n); err != nil {
			return Plan{}, err
		}
	}
	if d.plan.FromImage == "" && d.plan.FromTemplate == "" {
		return Plan{}, &SyntaxError{Msg: "no FROM instruction"}
	}
	d.plan.StartCmd = startCommand(d.entrypoint, d.cmd)
	return d.plan, nil
}

type dfState struct {
	plan      Plan
	ctx       string
	args      map[string]string // ARG values in scope
	env       map[string]string // ENV values so far
	buildArgs map[string]string
	lex       *shell.Lex
	sawFrom   bool
	// entrypoint and cmd in shell words (exec form quoted); nil: unset.
	entrypoint, cmd []string
}

// envGetter is ARGs overlaid by ENVs, as Docker expands words.
func (d *dfState) envGetter() shell.EnvGetter {
	var kv []string
	for k, v := range d.args {
		if _, ok := d.env[k]; !ok {
			kv = append(kv, k+"="+v)
		}
	}
	for k, v := range d.env {
		kv = append(kv, k+"="+v)
	}
	return shell.EnvsFromSlice(kv)
}

func (d *dfState) expand(n *parser.Node, w string) (string, error) {
	out, _, err := d.lex.ProcessWord(w, d.envGetter())
	if err != nil {
		return "", &SyntaxError{Line: n.StartLine, Msg: err.Error()}
	}
	return out, nil
}

func args(n *parser.Node) []string {
	var out []string
	for a := n.Next; a != nil; a = a.Next {
		out = append(out, a.Value)
	}
	return out
}

// flags parses --name=value flags; only the allowed names are accepted.
func flags(n *parser.Node, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range n.Flags {
		name, val, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return nil, &SyntaxError{Line: n.StartLine, Msg: fmt.Sprintf("%s --%s is not supported", strings.ToUpper(n.Value), name)}
		}
		out[name] = val
	}
	return out, nil
}

func (d *dfState) instruction(n *parser.Node) error {
	inst := strings.ToUpper(n.Value)
	a := args(n)
	bad := func(format string, x ...any) error {
		return &SyntaxError{Line: n.StartLine, Msg: fmt.Sprintf(format, x...)}
	}
	if !d.sawFrom && inst != "FROM" && inst != "ARG" {
		return bad("%s before FROM", inst)
	}
	switch inst {
	case "FROM":
		if d.sawFrom {
			return bad("multi-stage builds (a second FROM) are not supported")
		}
		if _, err := flags(n); err != nil {
			return err
		}
		if len(a) != 1 && !(len(a) == 3 && strings.EqualFold(a[1], "AS")) {
			return bad("FROM wants one image or template name")
		}
		from, err := d.expand(n, a[0])
		if err != nil {
			return err
		}
		d.sawFrom = true
		// Which of the two it is is decided by the caller, which knows the
		// templates (DESIGN.md §8): record it as an image for now.
		d.plan.FromImage = from
		// ARGs declared before FROM are only visible to FROM.
		d.args = map[string]string{}
	case "ARG":
		for _, kv := range a {
			k, v, hasDefault := strings.Cut(kv, "=")
			if bv, ok := d.buildArgs[k]; ok {
				v = bv
			} else if hasDefault {
				var err error
				if v, err = d.expand(n, v); err != nil {
					return err
				}
			}
			d.args[k] = v
		}
	case "RUN":
		if _, err := flags(n); err != nil {
			return err
		}
		if len(a) == 0 {
			return bad("RUN needs a command")
		}
		s := Step{Type: StepRun, Line: n.StartLine}
		if n.Attributes["json"] {
			s.Exec, s.Args = true, a
		} else {
			s.Args = []string{a[0]}
		}
		// ARG values are visible to RUN as environment variables.
		for k, v := range d.args {
			if _, ok := d.env[k]; !ok {
				s.ArgEnv = append(s.ArgEnv, k+"="+v)
			}
		}
		sort.Strings(s.ArgEnv)
		d.plan.Steps = append(d.plan.Steps, s)
	case "COPY", "ADD":
		f, err := flags(n, "chown")
		if err != nil {
			return err
		}
		if len(a) < 2 {
			return bad("%s wants at least one source and a destination", inst)
		}
		var ex []string
		for _, w := range a {
			v, err := d.expand(n, w)
			if err != nil {
				return err
			}
			if inst == "ADD" && (strings.HasPrefix(v, "http://") || strings.HasPrefix(v, "https://")) {
				return bad("ADD from a URL is not supported; download it in a RUN step")
			}
			ex = append(ex, v)
		}
		chown, err := d.expand(n, f["chown"])
		if err != nil {
			return err
		}
		if inst == "ADD" {
			d.plan.Notes = append(d.plan.Notes, fmt.Sprintf("line %d: ADD is run as COPY (archives are not unpacked)", n.StartLine))
		}
		d.plan.Steps = append(d.plan.Steps, Step{Type: StepCopy, Args: ex, Chown: chown, Context: d.ctx, Line: n.StartLine})
	case "ENV":
		// The parser gives (key, value, separator) triples.
		if len(a) == 0 || len(a)%3 != 0 {
			return bad("ENV wants KEY=VALUE pairs")
		}
		var kv []string
		for i := 0; i < len(a); i += 3 {
			v, err := d.expand(n, a[i+1])
			if err != nil {
				return err
			}
			d.env[a[i]] = v
			kv = append(kv, a[i], v)
		}
		d.plan.Steps = append(d.plan.Steps, Step{Type: StepEnv, Args: kv, Line: n.StartLine})
	case "WORKDIR", "USER":
		if len(a) != 1 {
			return bad("%s wants one argument", inst)
		}
		v, err := d.expand(n, a[0])
		if err != nil {
			return err
		}
		d.plan.Steps = append(d.plan.Steps, Step{Type: inst, Args: []string{v}, Line: n.StartLine})
	case "CMD", "ENTRYPOINT":
		var words []string
		if n.Attributes["json"] {
			for _, w := range a {
				words = append(words, shellQuote(w))
			}
		} else if len(a) > 0 {
			words = []string{a[0]}
		}
		if inst == "CMD" {
			d.cmd = words
		} else {
			d.entrypoint = words
		}
	case "EXPOSE", "HEALTHCHECK", "VOLUME", "LABEL", "MAINTAINER", "STOPSIGNAL", "ONBUILD", "SHELL":
		d.plan.Notes = append(d.plan.Notes, fmt.Sprintf("line %d: %s has no effect in a hearth template (ignored)", n.StartLine, inst))
	default:
		return bad("unknown instruction %s", inst)
	}
	return nil
}

// startCommand joins ENTRYPOINT and CMD as Docker does (CMD is the
// entrypoint's arguments) into one shell command.
func startCommand(entrypoint, cmd []string) string {
	return strings.Join(append(append([]string(nil), entrypoint...), cmd...), " ")
}

// shellQuote quotes s for /bin/sh unless it needs none.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func sortStrings(s []string) { sort.Strings(s) }
