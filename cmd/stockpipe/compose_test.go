package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/store"
)

// No container engine runs in the tests, so the deployment files are checked
// the way one would read them: every stockpipe command line in the compose
// file goes through the CLI's own parser with the service's environment, and
// the wiring between services (health checks, dependencies, ports, volumes)
// is checked against what stockpipe needs. None of these tests may run in
// parallel: the compose checks set process environment variables.

type composeFile struct {
	Services map[string]*composeService `yaml:"services"`
	Volumes  map[string]any             `yaml:"volumes"`
	Extras   map[string]any             `yaml:",inline"` // x-… anchors
}

type composeService struct {
	Image           string            `yaml:"image"`
	Build           any               `yaml:"build"`
	Hostname        string            `yaml:"hostname"`
	Restart         string            `yaml:"restart"`
	Command         []string          `yaml:"command"`
	Environment     map[string]string `yaml:"environment"`
	Volumes         []string          `yaml:"volumes"`
	Ports           []string          `yaml:"ports"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
	Healthcheck     *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Deploy struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
}

// loadCompose decodes the compose file strictly, so a misspelt key (say
// "healtcheck") fails instead of being ignored.
func loadCompose(t *testing.T, data []byte) *composeFile {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f composeFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return &f
}

func readRepoFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../" + name)
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return b
}

var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate does what Compose does to ${VAR}, ${VAR:-default} and
// ${VAR:?message} with none of the variables set: defaults are used and a
// required variable stands in as a placeholder, as if the operator had set it.
func interpolate(s string) string {
	s = composeVar.ReplaceAllStringFunc(s, func(m string) string {
		sub := composeVar.FindStringSubmatch(m)
		switch sub[2] {
		case ":-", "-":
			return sub[3]
		case ":?", "?":
			return "placeholder-" + strings.ToLower(sub[1])
		}
		return ""
	})
	return strings.ReplaceAll(s, "$$", "$")
}

// isStockpipe reports whether the service runs the image built from this
// repository.
func (s *composeService) isStockpipe() bool { return s.Build != nil }

func (s *composeService) oneShot() bool { return s.Restart == "no" }

func findCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// withServiceEnv runs fn with exactly env as the stockpipe variables of the
// process environment (as in the container), restoring them afterwards.
func withServiceEnv(env map[string]string, fn func()) {
	saved := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "STOCKPIPE_") || k == "DATABASE_URL" {
			saved[k] = v
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		os.Setenv(k, interpolate(v))
	}
	defer func() {
		for k := range env {
			os.Unsetenv(k)
		}
		for k, v := range saved {
			os.Setenv(k, v)
		}
	}()
	fn()
}

// parseServiceCommand parses args as stockpipe's CLI would inside the
// service's container and returns the parsed command.
func parseServiceCommand(args []string, env map[string]string) (*command, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("no command")
	}
	c := findCommand(args[0])
	if c == nil {
		return nil, fmt.Errorf("%q is not a stockpipe subcommand", args[0])
	}
	var err error
	withServiceEnv(env, func() { err = c.parse(args[1:], io.Discard) })
	return c, err
}

func flagValue(c *command, name string) (string, bool) {
	f := c.fs.Lookup(name)
	if f == nil {
		return "", false
	}
	return f.Value.String(), true
}

// checkCompose returns every problem found in f; none means the file is
// consistent with the CLI.
func checkCompose(f *composeFile) []string {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }

	names := make([]string, 0, len(f.Services))
	for name := range f.Services {
		names = append(names, name)
	}
	slices.Sort(names)

	// Infrastructure.
	if k := f.Services["kafka"]; k == nil {
		bad("no kafka service")
	} else {
		if !strings.HasPrefix(k.Image, "apache/kafka:") || strings.HasSuffix(k.Image, ":latest") {
			bad("kafka: image %q is not a pinned apache/kafka", k.Image)
		}
		roles := k.Environment["KAFKA_PROCESS_ROLES"]
		if !strings.Contains(roles, "broker") || !strings.Contains(roles, "controller") {
			bad("kafka: KAFKA_PROCESS_ROLES %q is not a combined KRaft broker and controller", roles)
		}
		if adv := k.Environment["KAFKA_ADVERTISED_LISTENERS"]; !strings.Contains(adv, "//kafka:9092") {
			bad("kafka: KAFKA_ADVERTISED_LISTENERS %q does not advertise kafka:9092 to the other containers", adv)
		}
		if k.Healthcheck == nil || !strings.Contains(strings.Join(k.Healthcheck.Test, " "), "kafka-broker-api-versions.sh") {
			bad("kafka: health check does not ask the broker (kafka-broker-api-versions.sh)")
		}
	}
	if p := f.Services["postgres"]; p == nil {
		bad("no postgres service")
	} else {
		if p.Image != "postgres:15" && !strings.HasPrefix(p.Image, "postgres:15.") && !strings.HasPrefix(p.Image, "postgres:15-") {
			bad("postgres: image %q is not PostgreSQL 15", p.Image)
		}
		if p.Healthcheck == nil || !slices.Contains(p.Healthcheck.Test, "pg_isready") {
			bad("postgres: health check does not use pg_isready")
		}
	}

	// Every service.
	for _, name := range names {
		s := f.Services[name]
		if !s.oneShot() && (s.Healthcheck == nil || len(s.Healthcheck.Test) < 2) {
			bad("%s: long-running service without a health check", name)
		}
		for dep, d := range s.DependsOn {
			target := f.Services[dep]
			switch {
			case target == nil:
				bad("%s: depends on %q, which is not a service", name, dep)
			case d.Condition == "service_healthy" && target.Healthcheck == nil:
				bad("%s: waits for %s to be healthy, but it has no health check", name, dep)
			case d.Condition == "service_completed_successfully" && !target.oneShot():
				bad("%s: waits for %s to complete, but it is long-running", name, dep)
			case d.Condition != "service_healthy" && d.Condition != "service_completed_successfully" && d.Condition != "service_started":
				bad("%s: depends_on %s has condition %q", name, dep, d.Condition)
			}
		}
		for _, v := range s.Volumes {
			src, _, ok := strings.Cut(v, ":")
			if !ok || strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				continue
			}
			if _, ok := f.Volumes[src]; !ok {
				bad("%s: volume %q is not declared under volumes", name, src)
			}
		}
	}

	// The stockpipe services.
	var migrators []string
	for _, name := range names {
		if s := f.Services[name]; s.isStockpipe() && s.oneShot() && len(s.Command) > 0 && s.Command[0] == "migrate" {
			migrators = append(migrators, name)
		}
	}
	if len(migrators) == 0 {
		bad("no one-shot service runs stockpipe migrate")
	}
	seen := map[string]bool{}
	for _, name := range names {
		s := f.Services[name]
		if !s.isStockpipe() {
			continue
		}
		c, err := parseServiceCommand(s.Command, s.Environment)
		if err != nil {
			bad("%s: command %q: %v", name, s.Command, err)
			continue
		}
		seen[c.name] = true
		for k := range s.Environment {
			switch {
			case k == "DATABASE_URL":
				if c.fs.Lookup("database-url") == nil {
					bad("%s: DATABASE_URL is set but %s has no --database-url", name, c.name)
				}
			case strings.HasPrefix(k, "STOCKPIPE_"):
				found := false
				for _, fl := range flagNames(c) {
					found = found || envName(fl) == k
				}
				if !found {
					bad("%s: %s names no flag of stockpipe %s", name, k, c.name)
				}
			default:
				bad("%s: %s is not a variable stockpipe reads", name, k)
			}
		}
		if raw, ok := s.Environment["STOCKPIPE_AUTH_TOKEN"]; ok && !regexp.MustCompile(`^\$\{STOCKPIPE_AUTH_TOKEN:\?`).MatchString(raw) {
			bad("%s: STOCKPIPE_AUTH_TOKEN must be required from the operator (${STOCKPIPE_AUTH_TOKEN:?…}), not written in the file", name)
		}
		if v, ok := flagValue(c, "database-url"); ok {
			if err := store.CheckURL(v); err != nil {
				bad("%s: --database-url: %v", name, err)
			} else if u, err := url.Parse(v); err == nil && f.Services[u.Hostname()] == nil {
				bad("%s: database host %q is not a service", name, u.Hostname())
			}
			if !s.oneShot() && !dependsOnCompleted(s, migrators) {
				bad("%s: uses the database but does not wait for migrate to complete", name)
			}
		}
		if v, ok := flagValue(c, "brokers"); ok {
			brokers, err := kafka.ParseBrokers(v)
			if err != nil || len(brokers) == 0 {
				bad("%s: --brokers %q: %v", name, v, err)
			}
			for _, b := range brokers {
				host, _, _ := net.SplitHostPort(b)
				if f.Services[host] == nil {
					bad("%s: broker host %q is not a service", name, host)
				}
			}
		}
		if _, ok := flagValue(c, "auth-token"); ok {
			hf := httpFlags{}
			hf.addr, _ = flagValue(c, "http")
			hf.token, _ = flagValue(c, "auth-token")
			ins, _ := flagValue(c, "insecure")
			hf.insecure = ins == "true"
			if err := hf.check(); err != nil {
				bad("%s: %v", name, err)
			}
		}
		if id, _ := flagValue(c, "instance-id"); id != "" && s.Deploy.Replicas > 1 {
			bad("%s: %d replicas share --instance-id %q; two live processors with one static ID fence each other", name, s.Deploy.Replicas, id)
		}
		if s.Healthcheck != nil {
			probs = append(probs, checkStockpipeHealth(name, c, s)...)
		}
	}
	for _, want := range []string{"migrate", "generate", "process", "serve", "scheduler"} {
		if !seen[want] {
			bad("no service runs stockpipe %s", want)
		}
	}
	if p := f.Services["processor"]; p == nil || p.Deploy.Replicas < 2 {
		bad("processor: needs deploy.replicas of 2 or more, to show the consumer group sharing partitions")
	}
	if s := f.Services["serve"]; s == nil {
		bad("no serve service")
	} else {
		published := false
		for _, p := range s.Ports {
			published = published || p == "8050" || strings.HasSuffix(p, ":8050")
		}
		if !published {
			bad("serve: port 8050 is not published")
		}
		if c, err := parseServiceCommand(s.Command, s.Environment); err == nil {
			addr, _ := flagValue(c, "http")
			hf := httpFlags{addr: addr}
			if _, port, _ := net.SplitHostPort(addr); port != "8050" || hf.loopback() {
				bad("serve: --http %s is not reachable through the published port 8050", addr)
			}
		}
	}
	return probs
}

func flagNames(c *command) []string {
	var out []string
	c.fs.VisitAll(func(f *flag.Flag) { out = append(out, f.Name) })
	return out
}

func dependsOnCompleted(s *composeService, targets []string) bool {
	for _, t := range targets {
		if d, ok := s.DependsOn[t]; ok && d.Condition == "service_completed_successfully" {
			return true
		}
	}
	return false
}

// checkStockpipeHealth checks a stockpipe service's health check: the image
// has no shell, so it must exec the binary, with a command line the CLI
// accepts, aimed at the port the service serves on.
func checkStockpipeHealth(name string, svc *command, s *composeService) []string {
	var probs []string
	test := s.Healthcheck.Test
	if len(test) < 3 || test[0] != "CMD" || test[1] != "/stockpipe" {
		return []string{fmt.Sprintf("%s: health check %q must be [\"CMD\", \"/stockpipe\", …]: the image has no shell or other programs", name, test)}
	}
	hc, err := parseServiceCommand(test[2:], s.Environment)
	if err != nil {
		return []string{fmt.Sprintf("%s: health check %q: %v", name, test, err)}
	}
	u, _ := flagValue(hc, "url")
	tcp, _ := flagValue(hc, "tcp")
	if hc.name != "health" || (u == "" && tcp == "") {
		return []string{fmt.Sprintf("%s: health check %q does not run stockpipe health --url or --tcp", name, test)}
	}
	if u != "" {
		pu, err := url.Parse(u)
		if err != nil {
			return []string{fmt.Sprintf("%s: health check URL %q: %v", name, u, err)}
		}
		addr, ok := flagValue(svc, "http")
		_, port, _ := net.SplitHostPort(addr)
		if !ok || port == "" || port != pu.Port() {
			probs = append(probs, fmt.Sprintf("%s: health check %s is not the port the service serves on (--http %q)", name, u, addr))
		}
	}
	return probs
}

func TestComposeFile(t *testing.T) {
	f := loadCompose(t, readRepoFile(t, "docker-compose.yml"))
	if probs := checkCompose(f); len(probs) > 0 {
		t.Fatalf("docker-compose.yml:\n  %s", strings.Join(probs, "\n  "))
	}
}

// TestComposeCheckerRefuses breaks the compose file one way at a time and
// requires the checker to notice, so that a passing TestComposeFile means
// something.
func TestComposeCheckerRefuses(t *testing.T) {
	data := readRepoFile(t, "docker-compose.yml")
	for _, tc := range []struct {
		name   string
		mutate func(f *composeFile)
		want   string
	}{
		{"unknown flag", func(f *composeFile) {
			f.Services["processor"].Command = append(f.Services["processor"].Command, "--batch-sise", "5000")
		}, "flag provided but not defined: -batch-sise"},
		{"bad flag value", func(f *composeFile) {
			f.Services["processor"].Command = append(f.Services["processor"].Command, "--batch-wait", "soon")
		}, "invalid value"},
		{"unknown subcommand", func(f *composeFile) { f.Services["generator"].Command = []string{"produce"} }, `"produce" is not a stockpipe subcommand`},
		{"env not a flag", func(f *composeFile) { f.Services["processor"].Environment["STOCKPIPE_RATE"] = "5" }, "STOCKPIPE_RATE names no flag of stockpipe process"},
		{"bad env value", func(f *composeFile) { f.Services["processor"].Environment["STOCKPIPE_BATCH_SIZE"] = "many" }, "STOCKPIPE_BATCH_SIZE"},
		{"foreign env", func(f *composeFile) { f.Services["serve"].Environment["AUTH_TOKEN"] = "x" }, "AUTH_TOKEN is not a variable stockpipe reads"},
		{"DATABASE_URL where unused", func(f *composeFile) { f.Services["generator"].Environment["DATABASE_URL"] = "postgres://u@postgres/db" }, "generate has no --database-url"},
		{"no database", func(f *composeFile) { delete(f.Services["processor"].Environment, "DATABASE_URL") }, "no database URL"},
		{"database host", func(f *composeFile) { f.Services["serve"].Environment["DATABASE_URL"] = "postgres://u@db:5432/x" }, `database host "db" is not a service`},
		{"broker host", func(f *composeFile) { f.Services["processor"].Environment["STOCKPIPE_BROKERS"] = "localhost:9092" }, `broker host "localhost" is not a service`},
		{"fixed token", func(f *composeFile) { f.Services["serve"].Environment["STOCKPIPE_AUTH_TOKEN"] = "secret" }, "must be required from the operator"},
		{"no token", func(f *composeFile) { delete(f.Services["serve"].Environment, "STOCKPIPE_AUTH_TOKEN") }, "set --auth-token"},
		{"serve on loopback", func(f *composeFile) { f.Services["serve"].Command = []string{"serve", "--http", "127.0.0.1:8050"} }, "not reachable through the published port"},
		{"port not published", func(f *composeFile) { f.Services["serve"].Ports = nil }, "port 8050 is not published"},
		{"shared instance id", func(f *composeFile) { f.Services["processor"].Environment["STOCKPIPE_INSTANCE_ID"] = "p1" }, "share --instance-id"},
		{"one processor", func(f *composeFile) { f.Services["processor"].Deploy.Replicas = 1 }, "deploy.replicas of 2 or more"},
		{"no health check", func(f *composeFile) { f.Services["scheduler"].Healthcheck = nil }, "scheduler: long-running service without a health check"},
		{"shell health check", func(f *composeFile) {
			f.Services["serve"].Healthcheck.Test = []string{"CMD-SHELL", "curl -f http://127.0.0.1:8050/healthz"}
		}, "the image has no shell"},
		{"health check wrong port", func(f *composeFile) {
			f.Services["processor"].Healthcheck.Test = []string{"CMD", "/stockpipe", "health", "--url", "http://127.0.0.1:8050/readyz"}
		}, "not the port the service serves on"},
		{"health check bad flag", func(f *composeFile) {
			f.Services["generator"].Healthcheck.Test = []string{"CMD", "/stockpipe", "health", "--host", "kafka:9092"}
		}, "flag provided but not defined"},
		{"missing dependency", func(f *composeFile) {
			f.Services["serve"].DependsOn["cache"] = f.Services["serve"].DependsOn["kafka"]
		}, `depends on "cache", which is not a service`},
		{"not waiting for migrate", func(f *composeFile) { delete(f.Services["scheduler"].DependsOn, "migrate") }, "does not wait for migrate"},
		{"kafka image", func(f *composeFile) { f.Services["kafka"].Image = "bitnami/kafka:3.7" }, "not a pinned apache/kafka"},
		{"kafka advertised", func(f *composeFile) {
			f.Services["kafka"].Environment["KAFKA_ADVERTISED_LISTENERS"] = "PLAINTEXT://localhost:9092"
		}, "does not advertise kafka:9092"},
		{"postgres image", func(f *composeFile) { f.Services["postgres"].Image = "postgres:16" }, "not PostgreSQL 15"},
		{"undeclared volume", func(f *composeFile) { delete(f.Volumes, "pgdata") }, `volume "pgdata" is not declared`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := loadCompose(t, data)
			tc.mutate(f)
			probs := checkCompose(f)
			for _, p := range probs {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("checker did not report %q; it reported:\n  %s", tc.want, strings.Join(probs, "\n  "))
		})
	}
	t.Run("misspelt key", func(t *testing.T) {
		dec := yaml.NewDecoder(strings.NewReader("services:\n  serve:\n    healtcheck: {}\n"))
		dec.KnownFields(true)
		var f composeFile
		if err := dec.Decode(&f); err == nil {
			t.Fatal("a misspelt key was accepted")
		}
	})
}

func TestComposeInterpolation(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:${POSTGRES_PASSWORD:-stockpipe}@postgres/db": "postgres://u:stockpipe@postgres/db",
		"${STOCKPIPE_AUTH_TOKEN:?set it}":                          "placeholder-stockpipe_auth_token",
		"${UNSET}x":                                                "x",
		"$$HOME":                                                   "$HOME",
	} {
		if got := interpolate(in); got != want {
			t.Errorf("interpolate(%q) = %q, want %q", in, got, want)
		}
	}
}

// dockerStage is one FROM … stage of a Dockerfile.
type dockerStage struct {
	image, name string
	instrs      [][2]string // instruction (upper case), arguments
}

func parseDockerfile(src string) []dockerStage {
	var stages []dockerStage
	sc := bufio.NewScanner(strings.NewReader(src))
	var line string
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && line == "") {
			continue
		}
		if cont, ok := strings.CutSuffix(l, "\\"); ok {
			line += cont + " "
			continue
		}
		line += l
		instr, args, _ := strings.Cut(strings.TrimSpace(line), " ")
		line = ""
		instr = strings.ToUpper(instr)
		args = strings.TrimSpace(args)
		if instr == "FROM" {
			f := strings.Fields(args)
			st := dockerStage{}
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					st.name = f[i+1]
					i++
				case st.image == "":
					st.image = f[i]
				}
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) > 0 && instr != "" {
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, [2]string{instr, args})
		}
	}
	return stages
}

// checkDockerfile returns every problem found in a Dockerfile and
// .dockerignore; goVersion is go.mod's go directive.
func checkDockerfile(src, ignore, goVersion string) []string {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	stages := parseDockerfile(src)
	if len(stages) < 2 {
		return []string{fmt.Sprintf("%d FROM stages; want a build stage and a small final one", len(stages))}
	}
	build, final := stages[0], stages[len(stages)-1]
	mm := strings.Join(strings.SplitN(goVersion, ".", 3)[:2], ".")
	if !strings.HasPrefix(build.image, "golang:"+mm) {
		bad("build stage image %q is not golang:%s (go.mod says go %s)", build.image, mm, goVersion)
	}
	built := false
	for _, st := range stages[:len(stages)-1] {
		for _, in := range st.instrs {
			a := in[1]
			if in[0] == "RUN" && strings.Contains(a, "go build") {
				built = true
				for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/stockpipe"} {
					if !strings.Contains(a, want) {
						bad("go build %q lacks %s", a, want)
					}
				}
			}
		}
	}
	if !built {
		bad("no build stage runs go build")
	}
	if strings.HasPrefix(final.image, "golang") {
		bad("final stage %q carries the Go toolchain", final.image)
	}
	user := ""
	if strings.HasSuffix(final.image, ":nonroot") {
		user = "nonroot"
	}
	var entry, copied string
	exposed := false
	for _, in := range final.instrs {
		switch in[0] {
		case "USER":
			user = in[1]
		case "ENTRYPOINT":
			entry = in[1]
		case "EXPOSE":
			exposed = exposed || slices.Contains(strings.Fields(in[1]), "8050")
		case "COPY":
			if strings.HasPrefix(in[1], "--from=") {
				copied = in[1]
			}
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		bad("final stage runs as root (USER %q)", user)
	}
	if entry != `["/stockpipe"]` {
		bad(`ENTRYPOINT %q is not ["/stockpipe"]`, entry)
	}
	if !exposed {
		bad("final stage does not EXPOSE 8050")
	}
	if !strings.HasSuffix(copied, " /stockpipe") {
		bad("final stage does not COPY the built binary to /stockpipe")
	}
	ignored := map[string]bool{}
	for _, l := range strings.Split(ignore, "\n") {
		ignored[strings.TrimSuffix(strings.TrimSpace(l), "/")] = true
	}
	for _, want := range []string{".git", "data", "bin", "screenshots"} {
		if !ignored[want] {
			bad(".dockerignore does not exclude %s", want)
		}
	}
	return probs
}

func goModVersion(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+(?:\.\d+)?)$`).FindSubmatch(readRepoFile(t, "go.mod"))
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

func TestDockerfile(t *testing.T) {
	src, ignore := string(readRepoFile(t, "Dockerfile")), string(readRepoFile(t, ".dockerignore"))
	if probs := checkDockerfile(src, ignore, goModVersion(t)); len(probs) > 0 {
		t.Fatalf("Dockerfile:\n  %s", strings.Join(probs, "\n  "))
	}
}

func TestDockerfileCheckerRefuses(t *testing.T) {
	src, ignore := string(readRepoFile(t, "Dockerfile")), string(readRepoFile(t, ".dockerignore"))
	goVersion := goModVersion(t)
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"one stage", "FROM gcr.io/distroless/static-debian12:nonroot\n", "", "FROM stages"},
		{"root", "USER 65532:65532", "USER root", "runs as root"},
		{"root tag", "static-debian12:nonroot\nCOPY", "static-debian12\nCOPY", ""},
		{"cgo", "CGO_ENABLED=0 ", "", "lacks CGO_ENABLED=0"},
		{"trimpath", "-trimpath ", "", "lacks -trimpath"},
		{"other package", "./cmd/stockpipe", "./internal/...", "lacks ./cmd/stockpipe"},
		{"old go", "golang:1.26", "golang:1.22", "is not golang:"},
		{"entrypoint", `ENTRYPOINT ["/stockpipe"]`, `ENTRYPOINT /stockpipe`, "ENTRYPOINT"},
		{"expose", "EXPOSE 8050", "EXPOSE 8080", "EXPOSE 8050"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(src, tc.old) {
				t.Fatalf("Dockerfile has no %q to break", tc.old)
			}
			broken := strings.Replace(src, tc.old, tc.new, 1)
			if tc.name == "root tag" {
				// Without the :nonroot tag the explicit USER still keeps
				// it non-root; dropping both must be refused.
				broken = strings.Replace(broken, "USER 65532:65532\n", "", 1)
				tc.want = "runs as root"
			}
			probs := checkDockerfile(broken, ignore, goVersion)
			for _, p := range probs {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("checker did not report %q; it reported %q", tc.want, probs)
		})
	}
	t.Run("dockerignore", func(t *testing.T) {
		probs := checkDockerfile(src, strings.Replace(ignore, "data/", "", 1), goVersion)
		if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, "exclude data") }) {
			t.Errorf("checker did not notice data/ missing from .dockerignore: %q", probs)
		}
	})
}

func TestHealthCommand(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready: processor: owns no partitions yet", http.StatusServiceUnavailable)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"health", "--url", srv.URL + "/healthz"}, 0, "healthy: GET " + srv.URL + "/healthz: 200 OK"},
		{[]string{"health", "--url", srv.URL + "/readyz"}, 1, "503 Service Unavailable: not ready: processor: owns no partitions yet"},
		{[]string{"health", "--tcp", srv.Listener.Addr().String()}, 0, "accepts connections"},
		{[]string{"health", "--tcp", closedAddr}, 1, "tcp " + closedAddr},
		{[]string{"health", "--tcp", srv.Listener.Addr().String(), "--url", srv.URL + "/readyz"}, 1, "503"},
		{[]string{"health"}, 1, "say what to check"},
		{[]string{"health", "--url", "127.0.0.1:8050/healthz"}, 1, "is not an http:// or https:// URL"},
		{[]string{"health", "--tcp", "8050"}, 1, "is not host:port"},
		{[]string{"health", "--url", srv.URL, "--timeout", "0s"}, 1, "--timeout must be above 0"},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		got := out + errOut
		if code != tc.code || !strings.Contains(got, tc.want) || strings.Count(strings.TrimSpace(got), "\n") != 0 {
			t.Errorf("%v: code %d, output %q; want code %d and one line containing %q", tc.args, code, got, tc.code, tc.want)
		}
	}
}
