package templatebuild

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseDockerfile(t *testing.T) {
	df := `# syntax is accepted
ARG BASE=tiny
FROM ${BASE}
ARG VER=1.0
ENV APP=/app PATH=/usr/local/bin:/bin
WORKDIR $APP
COPY --chown=user:user a.txt b/ ./
ADD c.txt /etc/c.txt
RUN echo "building $VER" && \
    touch /done
RUN ["/bin/echo", "exec form"]
USER user
EXPOSE 8000
HEALTHCHECK CMD true
VOLUME /data
ENTRYPOINT ["python3", "-m"]
CMD ["http.server", "8000"]
`
	p, err := ParseDockerfile([]byte(df), "/ctx", map[string]string{"VER": "2.0"})
	if err != nil {
		t.Fatal(err)
	}
	if p.FromImage != "tiny" {
		t.Errorf("FROM = %q, want tiny (ARG before FROM expanded)", p.FromImage)
	}
	want := []Step{
		{Type: StepEnv, Args: []string{"APP", "/app", "PATH", "/usr/local/bin:/bin"}, Line: 5},
		{Type: StepWorkdir, Args: []string{"/app"}, Line: 6},
		{Type: StepCopy, Args: []string{"a.txt", "b/", "./"}, Chown: "user:user", Context: "/ctx", Line: 7},
		{Type: StepCopy, Args: []string{"c.txt", "/etc/c.txt"}, Context: "/ctx", Line: 8},
		{Type: StepRun, Args: []string{`echo "building $VER" &&     touch /done`}, ArgEnv: []string{"VER=2.0"}, Line: 9},
		{Type: StepRun, Args: []string{"/bin/echo", "exec form"}, Exec: true, ArgEnv: []string{"VER=2.0"}, Line: 11},
		{Type: StepUser, Args: []string{"user"}, Line: 12},
	}
	if !reflect.DeepEqual(p.Steps, want) {
		t.Errorf("steps:\n got %+v\nwant %+v", p.Steps, want)
	}
	if p.StartCmd != "python3 -m http.server 8000" {
		t.Errorf("start = %q", p.StartCmd)
	}
	notes := strings.Join(p.Notes, "\n")
	for _, w := range []string{"EXPOSE", "HEALTHCHECK", "VOLUME", "ADD is run as COPY"} {
		if !strings.Contains(notes, w) {
			t.Errorf("notes lack %s: %s", w, notes)
		}
	}
}

func TestParseDockerfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, df string
		line     int
		msg      string
	}{
		{"no from", "RUN true\n", 1, "before FROM"},
		{"multi-stage", "FROM a\nFROM b\n", 2, "multi-stage"},
		{"unknown instruction", "FROM a\n\nFROBNICATE x\n", 3, "unknown instruction"},
		{"run mount", "FROM a\nRUN --mount=type=cache,target=/x true\n", 2, "--mount"},
		{"add url", "FROM a\nADD https://example.com/x /x\n", 2, "URL"},
		{"copy from stage", "FROM a\nCOPY --from=build /x /y\n", 2, "--from"},
		{"empty", "# nothing\n", 1, "no instructions"},
		{"bad env", "FROM a\nENV\n", 2, "ENV"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDockerfile([]byte(tc.df), "", nil)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a SyntaxError", err)
			}
			if se.Line != tc.line || !strings.Contains(se.Error(), tc.msg) {
				t.Errorf("err = %q (line %d), want line %d mentioning %q", se, se.Line, tc.line, tc.msg)
			}
		})
	}
}

func TestRelTo(t *testing.T) {
	tests := []struct{ root, p, want string }{
		{".", ".", ""},
		{".", ".dockerignore", ".dockerignore"},
		{".", "a/.env", "a/.env"},
		{"conf", "conf", ""},
		{"conf", "conf/.hidden", ".hidden"},
		{"conf", "conf/sub/x", "sub/x"},
	}
	for _, tc := range tests {
		if got := relTo(tc.root, tc.p); got != tc.want {
			t.Errorf("relTo(%q, %q) = %q, want %q", tc.root, tc.p, got, tc.want)
		}
	}
}
