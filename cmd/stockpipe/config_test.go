package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md from the commands")

// clearStockpipeEnv unsets every variable stockpipe reads for the rest of
// the test, so that the machine's environment cannot change the outcome.
func clearStockpipeEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if (strings.HasPrefix(k, "STOCKPIPE_") && k != asCLI) || slices.Contains(slices.Collect(maps.Values(envAliases)), k) {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

func TestConfigSourcesAndMasking(t *testing.T) {
	type want struct{ flag, value, source string }
	// dflt stands for the flag's default as the command defines it, which
	// this test should not have to follow.
	const dflt = "\x00default"
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []want
		// none of these may appear anywhere in the output
		hidden []string
	}{
		{name: "defaults", args: []string{"process"}, want: []want{
			{"batch-size", dflt, "default"}, {"group", dflt, "default"}, {"brokers", "", "default"},
			{"database-url", "", "default"}, {"log-level", dflt, "default"}}},
		{name: "environment", env: map[string]string{"STOCKPIPE_BATCH_SIZE": "500", "STOCKPIPE_BROKERS": "kafka:9092"},
			args: []string{"process"}, want: []want{
				{"batch-size", "500", "env STOCKPIPE_BATCH_SIZE"}, {"brokers", "kafka:9092", "env STOCKPIPE_BROKERS"},
				{"batch-wait", dflt, "default"}}},
		{name: "command line beats environment", env: map[string]string{"STOCKPIPE_BATCH_SIZE": "500"},
			args: []string{"process", "--batch-size", "5000", "--lateness=5s"}, want: []want{
				{"batch-size", "5000", "flag"}, {"lateness", "5s", "flag"}}},
		{name: "empty flag beats environment", env: map[string]string{"STOCKPIPE_GROUP": "other"},
			args: []string{"process", "--group", ""}, want: []want{{"group", "", "flag"}}},
		{name: "DATABASE_URL", env: map[string]string{"DATABASE_URL": "postgres://app:s3cret@db:5432/stock?sslmode=disable"},
			args: []string{"migrate"}, hidden: []string{"s3cret"}, want: []want{
				{"database-url", "postgres://app:***@db:5432/stock?sslmode=disable", "env DATABASE_URL"}}},
		{name: "STOCKPIPE_DATABASE_URL beats DATABASE_URL",
			env:  map[string]string{"DATABASE_URL": "postgres://a:one@db/x", "STOCKPIPE_DATABASE_URL": "postgres://b:two@db/y"},
			args: []string{"migrate"}, hidden: []string{"one", "two"}, want: []want{
				{"database-url", "postgres://b:***@db/y", "env STOCKPIPE_DATABASE_URL"}}},
		{name: "database URL on the command line", env: map[string]string{"DATABASE_URL": "postgres://a:envpass@db/x"},
			args: []string{"migrate", "--database-url", "postgres://u:flagpass@h/db"}, hidden: []string{"envpass", "flagpass"},
			want: []want{{"database-url", "postgres://u:***@h/db", "flag"}}},
		{name: "password in the query", args: []string{"migrate", "--database-url", "postgres://u@h/db?password=qpass&sslmode=require"},
			hidden: []string{"qpass"}, want: []want{{"database-url", "postgres://u@h/db?password=***&sslmode=require", "flag"}}},
		{name: "keyword/value connection string", args: []string{"migrate", "--database-url", "host=db user=u password='kv pass' dbname=x"},
			hidden: []string{"kv pass"}, want: []want{{"database-url", "host=db user=u password=*** dbname=x", "flag"}}},
		{name: "user without password", args: []string{"migrate", "--database-url", "postgres://u@h:5432/db"},
			want: []want{{"database-url", "postgres://u@h:5432/db", "flag"}}},
		{name: "kafka password and token", env: map[string]string{"STOCKPIPE_KAFKA_PASSWORD": "kpass"},
			args: []string{"serve", "--auth-token", "tok3n", "--insecure", "--kafka-user", "alice"}, hidden: []string{"kpass", "tok3n"},
			want: []want{{"kafka-password", "***", "env STOCKPIPE_KAFKA_PASSWORD"}, {"auth-token", "***", "flag"},
				{"insecure", "true", "flag"}, {"kafka-user", "alice", "flag"}, {"http", dflt, "default"}}},
		{name: "providers' own variables set their credentials",
			env:  map[string]string{"APCA_API_KEY_ID": "PKTESTKEY", "APCA_API_SECRET_KEY": "sekr1t", "FINNHUB_TOKEN": "fhtok"},
			args: []string{"up", "--source", "alpaca"}, hidden: []string{"PKTESTKEY", "sekr1t", "fhtok"},
			want: []want{{"key", "***", "env APCA_API_KEY_ID"}, {"secret", "***", "env APCA_API_SECRET_KEY"},
				{"token", "***", "env FINNHUB_TOKEN"}, {"source", "alpaca", "flag"}}},
		{name: "credential flags are masked", args: []string{"ingest", "finnhub", "--token", "fl4gtok"}, hidden: []string{"fl4gtok"},
			want: []want{{"token", "***", "flag"}}},
		{name: "log flags reach the command", env: map[string]string{"STOCKPIPE_LOG_FORMAT": "json"},
			args: []string{"process", "--log-level", "debug"}, want: []want{
				{"log-level", "debug", "flag"}, {"log-format", "json", "env STOCKPIPE_LOG_FORMAT"}}},
		{name: "flags before the command", args: []string{"--batch-size", "7", "process"}, want: []want{{"batch-size", "7", "flag"}}},
		{name: "arguments", args: []string{"dag", "trigger", "market_close", "--date", "2026-11-02"}, want: []want{
			{"date", "2026-11-02", "flag"}, {"limit", dflt, "default"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearStockpipeEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, out, errOut := runCLI(t, append([]string{"config"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("config %v: code %d, %s", tc.args, code, errOut)
			}
			target := ""
			for _, a := range tc.args {
				if findCommand(a) != nil {
					target = a
					break
				}
			}
			for i, w := range tc.want {
				if w.value == dflt {
					tc.want[i].value = findCommand(target).fs.Lookup(w.flag).DefValue
				}
			}
			lines := strings.Split(out, "\n")
			for _, w := range tc.want {
				var got [2]string
				for _, line := range lines {
					if rest, ok := strings.CutPrefix(line, "--"+w.flag+" "); ok {
						// VALUE and SOURCE columns; a value may hold spaces.
						rest = strings.TrimSpace(rest)
						if mid, ok := strings.CutSuffix(rest, "  "+w.source); ok {
							rest = strings.TrimSpace(mid)
							got[1] = w.source
						}
						if rest == `""` {
							rest = ""
						}
						got[0] = rest
					}
				}
				if got != [2]string{w.value, w.source} {
					t.Errorf("--%s: got %q, want value %q from %q\n%s", w.flag, got, w.value, w.source, out)
				}
			}
			code, jout, errOut := runCLI(t, append([]string{"config", "--json"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("config --json %v: code %d, %s", tc.args, code, errOut)
			}
			var doc struct {
				Command string
				Args    []string
				Flags   []configEntry
			}
			if err := json.Unmarshal([]byte(jout), &doc); err != nil {
				t.Fatalf("config --json: %v\n%s", err, jout)
			}
			byName := map[string]configEntry{}
			for _, e := range doc.Flags {
				byName[e.Name] = e
			}
			for _, w := range tc.want {
				e := byName[w.flag]
				src := e.Source
				if e.Env != "" {
					src += " " + e.Env
				}
				if e.Value != w.value || src != w.source {
					t.Errorf("--json --%s: got %q from %q, want %q from %q", w.flag, e.Value, src, w.value, w.source)
				}
			}
			for _, h := range tc.hidden {
				if strings.Contains(out, h) || strings.Contains(jout, h) {
					t.Errorf("secret %q printed:\n%s\n%s", h, out, jout)
				}
			}
		})
	}
}

func TestConfigJSONShape(t *testing.T) {
	clearStockpipeEnv(t)
	code, out, errOut := runCLI(t, "config", "--json", "dag", "runs", "market_close")
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	var doc struct {
		Command string        `json:"command"`
		Args    []string      `json:"args"`
		Flags   []configEntry `json:"flags"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Command != "dag" || strings.Join(doc.Args, " ") != "runs market_close" || len(doc.Flags) < 5 {
		t.Errorf("unexpected document: %+v", doc)
	}
	for _, e := range doc.Flags {
		if (e.Name == "database-url" || e.Name == "kafka-password") != e.Secret {
			t.Errorf("--%s: secret = %v", e.Name, e.Secret)
		}
	}
}

func TestConfigRefuses(t *testing.T) {
	clearStockpipeEnv(t)
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"config"}, "say which command"},
		{nil, []string{"config", "nosuch"}, `unknown command "nosuch"`},
		{nil, []string{"config", "config"}, `unknown command "config"`},
		{nil, []string{"config", "migrate", "--batch-size", "5"}, "migrate: flag provided but not defined: -batch-size"},
		{nil, []string{"config", "process", "--no-such-flag"}, "flag provided but not defined"},
		{nil, []string{"config", "process", "--batch-size", "lots"}, "invalid value"},
		{map[string]string{"STOCKPIPE_BATCH_WAIT": "soon"}, []string{"config", "process"}, "STOCKPIPE_BATCH_WAIT"},
		{nil, []string{"config", "migrate", "extra"}, `unexpected argument "extra"`},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		code, _, errOut := runCLI(t, tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: code %d, stderr %q; want one line containing %q", tc.args, code, errOut, tc.want)
		}
		for k := range tc.env {
			os.Unsetenv(k)
		}
	}
}

// TestConfigAcceptsEveryFlag guards the flag set config builds from the
// other commands: every flag of every command must be accepted, with the
// same boolean-ness, or config would misread a command line.
func TestConfigAcceptsEveryFlag(t *testing.T) {
	cfg := findCommand("config")
	for _, c := range commands() {
		if c.name == "config" {
			continue
		}
		c.fs.VisitAll(func(f *flag.Flag) {
			got := cfg.fs.Lookup(f.Name)
			if got == nil {
				t.Errorf("config does not accept --%s of %s", f.Name, c.name)
				return
			}
			if isBoolFlag(got) != isBoolFlag(f) {
				t.Errorf("--%s is boolean in one command and not in another; config cannot pass it on", f.Name)
			}
		})
	}
}

func TestMaskDatabaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                                       "",
		"postgres://u:p@h/db":                    "postgres://u:***@h/db",
		"postgresql://us%40er:p%3Ass@h:5/db?x=1": "postgresql://us%40er:***@h:5/db?x=1",
		"postgres://u:@h/db":                     "postgres://u:***@h/db",
		"postgres://h/db?PassWord=x&a=b":         "postgres://h/db?PassWord=***&a=b",
		"postgres://u:p@[::1/db":                 "***",
		"user=u password=secret host=h":          "user=u password=*** host=h",
		`password='it\'s pw' host=h`:             "password=*** host=h",
	} {
		if got := maskDatabaseURL(in); got != want {
			t.Errorf("maskDatabaseURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// renderConfigurationDoc is docs/configuration.md: every command's flags and
// their environment variables, from the flag sets themselves.
func renderConfigurationDoc() string {
	var b strings.Builder
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	b.WriteString(`# Configuration reference

<!-- Generated from the code: go test ./cmd/stockpipe -run TestConfigurationDoc -update. Do not edit by hand. -->

Every flag of every command can also be set from the environment as
` + "`STOCKPIPE_<FLAG>`" + `: the flag's name in upper case with ` + "`-`" + ` as ` + "`_`" + `
(` + "`--batch-size`" + ` is ` + "`STOCKPIPE_BATCH_SIZE`" + `). ` + "`--database-url`" + ` also reads
` + "`DATABASE_URL`" + `. The command line wins over ` + "`STOCKPIPE_<FLAG>`" + `, which wins over
` + "`DATABASE_URL`" + `, which wins over the default. A boolean flag is set from the
environment with ` + "`true`" + ` or ` + "`false`" + `.

To see what a command would run with — each flag's value and whether it came
from the command line, the environment or the default — put ` + "`config`" + ` in
front of it:

` + "```sh" + `
stockpipe config process --batch-size 5000
stockpipe config --json serve
` + "```" + `

` + "`config`" + ` never prints ` + "`--kafka-password`" + ` or ` + "`--auth-token`" + `, and shows
the password in ` + "`--database-url`" + ` as ` + "`***`" + ` (` + "`postgres://user:***@host/db`" + `).
Prefer the environment for secrets: a command line is visible to every user
of the machine in ` + "`ps`" + `.

`)
	cmds := commands()
	for _, c := range cmds {
		fmt.Fprintf(&b, "- [`%s`](#%s) — %s\n", c.name, c.name, c.summary)
	}
	for _, c := range cmds {
		fmt.Fprintf(&b, "\n## `%s`\n\n%s.\n\n```sh\nstockpipe %s %s\n```\n\nExample: `%s`\n\n", c.name, upperFirst(c.summary), c.name, c.usage, c.example)
		if c.name == "config" {
			b.WriteString("Besides the flags below, `config` accepts every flag of COMMAND and passes it on.\n\n")
		}
		b.WriteString("| flag | environment | default | meaning |\n| --- | --- | --- | --- |\n")
		c.fs.VisitAll(func(f *flag.Flag) {
			if _, passed := f.Value.(*recorder); passed {
				return // a flag of the command config shows, listed there
			}
			env := "`" + envName(f.Name) + "`"
			if f.Name == "database-url" {
				env += ", `DATABASE_URL`"
			}
			def := "`" + f.DefValue + "`"
			if f.DefValue == "" {
				def = "—"
			}
			fmt.Fprintf(&b, "| `--%s` | %s | %s | %s |\n", f.Name, env, cell(def), cell(f.Usage))
		})
	}
	return b.String()
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func TestConfigurationDoc(t *testing.T) {
	const path = "../../docs/configuration.md"
	want := renderConfigurationDoc()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (create it with: go test ./cmd/stockpipe -run TestConfigurationDoc -update)", err)
	}
	if string(got) != want {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(want, "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("docs/configuration.md is out of date with the flags (first difference, line %d):\n  file: %q\n  code: %q\nregenerate it with: go test ./cmd/stockpipe -run TestConfigurationDoc -update", i+1, g, w)
			}
		}
	}
}
