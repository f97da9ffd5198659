package cli

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

var updateReference = flag.Bool("update-reference", false, "rewrite docs/cli.md and the settings table of docs/configuration.md from the commands")

// TestCLIReference keeps docs/cli.md equal to the commands' own help, so the
// reference cannot drift from the code. Regenerate with
// go test ./internal/cli -run TestCLIReference -update-reference.
func TestCLIReference(t *testing.T) {
	got := cliReference()
	const path = "../../docs/cli.md"
	if *updateReference {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/cli.md is out of date with the commands; run: go test ./internal/cli -run TestCLIReference -update-reference")
	}
}

func cliReference() []byte {
	var b bytes.Buffer
	b.WriteString("# dpsd CLI reference\n\n")
	b.WriteString("Generated from the commands' help (`go test ./internal/cli -run TestCLIReference -update-reference`);\n")
	b.WriteString("`dpsd COMMAND --help` prints the same. Commands in the shape of `az iot dps` keep az's flag names;\n")
	b.WriteString("the short aliases az accepts (`--eid`, `--cp`, `--pk`, ...) work too and are hidden here.\n\n")
	root := newRoot(&env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "completion" || c.Name() == "help" {
			return
		}
		if c != root {
			fmt.Fprintf(&b, "## %s\n\n", c.CommandPath())
			desc := c.Long
			if desc == "" {
				desc = c.Short
			}
			b.WriteString(strings.TrimSpace(desc) + "\n\n")
			b.WriteString("```\n" + strings.TrimSpace(c.UsageString()) + "\n```\n\n")
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return b.Bytes()
}

// The settings table of docs/configuration.md stands between these lines;
// the prose around it is written by hand.
const (
	settingsBegin = "<!-- Generated from the flags of 'dpsd serve' (go test ./internal/cli -run TestConfigurationReference -update-reference): change the flags, not this table. -->\n"
	settingsEnd   = "<!-- End of the generated table. -->\n"
)

// TestConfigurationReference keeps the settings table of
// docs/configuration.md equal to the flags of `dpsd serve`: name,
// environment variable, default and help. Regenerate with
// go test ./internal/cli -run TestConfigurationReference -update-reference.
func TestConfigurationReference(t *testing.T) {
	const path = "../../docs/configuration.md"
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok1 := bytes.Cut(doc, []byte(settingsBegin))
	_, after, ok2 := bytes.Cut(rest, []byte(settingsEnd))
	if !ok1 || !ok2 {
		t.Fatalf("docs/configuration.md has no settings table between the lines\n%s%s", settingsBegin, settingsEnd)
	}
	got := slices.Concat(before, []byte(settingsBegin), serveSettingsTable(), []byte(settingsEnd), after)
	if *updateReference {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(got, doc) {
		t.Fatalf("the settings table of docs/configuration.md is out of date with the flags of 'dpsd serve'; run: go test ./internal/cli -run TestConfigurationReference -update-reference")
	}
}

// serveSettingsTable lists the flags of `dpsd serve` in the order serve.go
// defines them.
func serveSettingsTable() []byte {
	var b bytes.Buffer
	b.WriteString("\n| Flag | Environment | Default | Meaning |\n|---|---|---|---|\n")
	fs := newServeCmd(&env{getenv: func(string) string { return "" }}).Flags()
	fs.SortFlags = false
	fs.VisitAll(func(f *pflag.Flag) {
		typ, usage := pflag.UnquoteUsage(f)
		name := strings.TrimSpace("--" + f.Name + " " + typ)
		env, def := "`"+envName(f.Name)+"`", "`"+f.DefValue+"`"
		if f.Name == configFlag {
			env = "—"
		}
		switch f.DefValue {
		case "", "false", "0", "[]", "0s":
			def = "—"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", name, env, def, strings.ReplaceAll(usage, "|", `\|`))
	})
	b.WriteString("\n")
	return b.Bytes()
}
