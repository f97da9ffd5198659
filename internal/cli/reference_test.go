package cli

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var updateReference = flag.Bool("update-reference", false, "rewrite docs/cli.md from the command tree")

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
