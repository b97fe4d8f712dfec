package main

// The user-facing commands (login, key, sandbox, template, snapshot, bench)
// share apiFlags: where the server is, how to authenticate, and how to
// print. Precedence: flags, then HEARTH_URL / HEARTH_API_KEY, then the login
// file written by `hearth login`.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/hearth-sandbox/hearth/internal/cli"
)

// apiFlags are the persistent flags of every API command group.
type apiFlags struct {
	url, apiKey, configPath, output string
}

func (f *apiFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.url, "url", "", "hearth server URL (env "+cli.EnvURL+"; default: from 'hearth login')")
	pf.StringVar(&f.apiKey, "api-key", "", "team API key (env "+cli.EnvAPIKey+"; default: from 'hearth login')")
	pf.StringVar(&f.configPath, "config", "", "login file (env "+cli.EnvConfig+"; default ~/.config/hearth/cli.json)")
	pf.StringVarP(&f.output, "output", "o", cli.FormatTable, "output format: table or json")
}

func (f *apiFlags) path() (string, error) {
	if f.configPath != "" {
		return f.configPath, nil
	}
	return cli.DefaultConfigPath(os.Getenv)
}

// resolve returns the effective configuration (file + env + flags).
func (f *apiFlags) resolve() (cli.Config, error) {
	if err := cli.CheckFormat(f.output); err != nil {
		return cli.Config{}, err
	}
	p, err := f.path()
	if err != nil {
		return cli.Config{}, err
	}
	file, err := cli.LoadConfig(p)
	if err != nil {
		return cli.Config{}, err
	}
	return cli.Resolve(file, os.Getenv, cli.Overrides{URL: f.url, APIKey: f.apiKey}), nil
}

func (f *apiFlags) client() (*cli.Client, error) {
	c, err := f.resolve()
	if err != nil {
		return nil, err
	}
	return c.Client(), nil
}

func (f *apiFlags) json() bool { return f.output == cli.FormatJSON }

// explained wraps a RunE so every error is printed as one line plus a hint.
func explained(run func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error { return cli.Explain(run(cmd, args)) }
}

// exactArgs is cobra.ExactArgs with a message that says what to type.
func exactArgs(n int, usage string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return cli.Explain(cli.Usagef("usage: hearth "+usage, "%s takes %d argument(s), got %d", cmd.CommandPath(), n, len(args)))
		}
		return nil
	}
}

func newLoginCmd() *cobra.Command {
	var f apiFlags
	var email string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "login --url URL [--email E] [--api-key KEY]",
		Short: "Log in to a hearth server (email/password or an API key) and remember it",
		Long: `Log in to a hearth server and store the URL and the credentials in
~/.config/hearth/cli.json (mode 0600).

With --api-key the key is checked and stored: sandbox, template and snapshot
commands then use it. Otherwise you are asked for your email and password
(the password is not echoed) and the session token is stored; it also lets
you manage API keys (hearth key ...).

HEARTH_URL and HEARTH_API_KEY override the stored values.`,
		Example: `  hearth login --url http://127.0.0.1:3000
  hearth login --url http://127.0.0.1:3000 --api-key e2b_...
  echo "$PASSWORD" | hearth login --url http://127.0.0.1:3000 --email me@example.com --password-stdin`,
		Args: cobra.NoArgs,
		RunE: explained(func(cmd *cobra.Command, _ []string) error {
			path, err := f.path()
			if err != nil {
				return err
			}
			old, err := cli.LoadConfig(path)
			if err != nil {
				return err
			}
			eff := cli.Resolve(old, os.Getenv, cli.Overrides{URL: f.url})
			if eff.URL == "" {
				return cli.Usagef("e.g. hearth login --url http://127.0.0.1:3000", "no server URL given")
			}
			next := cli.Config{URL: eff.URL}
			if old.URL == eff.URL { // keep what the other login kind stored
				next.Token, next.APIKey, next.Email = old.Token, old.APIKey, old.Email
			}
			ctx := cmd.Context()
			c := cli.NewClient(eff.URL, f.apiKey, "")
			if f.apiKey != "" {
				if _, err := c.ListTemplates(ctx); err != nil {
					return fmt.Errorf("check the API key: %w", err)
				}
				next.APIKey = f.apiKey
			} else {
				in := bufio.NewReader(cmd.InOrStdin())
				if email == "" {
					if email, err = prompt(cmd, in, "Email: "); err != nil {
						return err
					}
				}
				pw, err := readPassword(cmd, in, passwordStdin)
				if err != nil {
					return err
				}
				tok, err := c.Login(ctx, strings.TrimSpace(email), pw)
				if err != nil {
					return err
				}
				next.Token, next.Email = tok, strings.TrimSpace(email)
			}
			if err := cli.SaveConfig(path, next); err != nil {
				return err
			}
			who := "with an API key"
			if f.apiKey == "" {
				who = "as " + next.Email
			}
			if f.json() {
				return cli.WriteJSON(cmd.OutOrStdout(), map[string]any{"url": next.URL, "email": next.Email, "api_key": next.APIKey != "", "token": next.Token != "", "config": path})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Logged in to %s %s (saved in %s)\n", next.URL, who, path)
			return nil
		}),
	}
	f.register(cmd)
	cmd.Flags().StringVar(&email, "email", "", "account email (default: prompt)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	return cmd
}

func newLogoutCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "Forget the stored hearth credentials",
		Args:  cobra.NoArgs,
		RunE: explained(func(cmd *cobra.Command, _ []string) error {
			path, err := f.path()
			if err != nil {
				return err
			}
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Logged out.")
			return nil
		}),
	}
	f.register(cmd)
	return cmd
}

func prompt(cmd *cobra.Command, in *bufio.Reader, label string) (string, error) {
	fmt.Fprint(cmd.ErrOrStderr(), label)
	line, err := in.ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", cli.Usagef("pass --email, or run it in a terminal", "no input for %q", strings.TrimSpace(label))
	}
	return strings.TrimSpace(line), nil
}

// readPassword reads without echo from a terminal, else one line of input.
func readPassword(cmd *cobra.Command, in *bufio.Reader, fromStdin bool) (string, error) {
	if f, ok := cmd.InOrStdin().(*os.File); ok && !fromStdin && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(cmd.ErrOrStderr(), "Password: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(b), nil
	}
	if !fromStdin {
		fmt.Fprint(cmd.ErrOrStderr(), "Password: ")
	}
	line, err := in.ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", cli.Usagef("pipe it with --password-stdin, or run it in a terminal", "no password given")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func newAPIKeyCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:     "key",
		Aliases: []string{"keys", "api-key"},
		Short:   "Manage your team's API keys (needs `hearth login` with email/password)",
	}
	f.register(cmd)

	var save bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an API key; it is shown only once",
		Example: `  hearth key create ci
  hearth key create laptop --save   # also use it for this CLI`,
		Args: exactArgs(1, "key create NAME"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			k, err := c.CreateAPIKey(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if save {
				path, err := f.path()
				if err != nil {
					return err
				}
				conf, err := cli.LoadConfig(path)
				if err != nil {
					return err
				}
				conf.APIKey = k.Key
				if err := cli.SaveConfig(path, conf); err != nil {
					return err
				}
			}
			if f.json() {
				return cli.WriteJSON(cmd.OutOrStdout(), k)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Created API key %s (%s). Store it now: it is not shown again.\n", k.Name, k.ID)
			fmt.Fprintln(cmd.OutOrStdout(), k.Key)
			return nil
		}),
	}
	create.Flags().BoolVar(&save, "save", false, "store the key in the login file for this CLI")

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List API keys (no secrets)",
		Args:    exactArgs(0, "key ls"),
		RunE: explained(func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			ks, err := c.ListAPIKeys(cmd.Context())
			if err != nil {
				return err
			}
			if f.json() {
				return cli.WriteJSON(cmd.OutOrStdout(), nonNil(ks))
			}
			t := cli.NewTable(cmd.OutOrStdout(), "id", "name", "prefix", "created", "last used")
			now := time.Now()
			for _, k := range ks {
				last := "never"
				if k.LastUsedAt != nil {
					last = cli.Age(now, *k.LastUsedAt) + " ago"
				}
				t.Row(k.ID, k.Name, k.Prefix+"…", cli.Age(now, k.CreatedAt)+" ago", last)
			}
			return t.Flush()
		}),
	}

	rm := &cobra.Command{
		Use:     "rm ID",
		Aliases: []string{"delete"},
		Short:   "Delete an API key",
		Args:    exactArgs(1, "key rm ID"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			if err := c.DeleteAPIKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			return printDone(cmd, f, map[string]string{"deleted": args[0]}, "Deleted API key "+args[0])
		}),
	}
	cmd.AddCommand(create, ls, rm)
	return cmd
}

// printDone prints v as JSON, or msg as a line.
func printDone(cmd *cobra.Command, f apiFlags, v any, msg string) error {
	if f.json() {
		return cli.WriteJSON(cmd.OutOrStdout(), v)
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), msg)
	return err
}

// nonNil makes empty lists print as [] in JSON.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
