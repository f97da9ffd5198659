package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
)

// Output formats of list and show commands.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// addOutputFlag adds --output/-o (table or json) to c.
func addOutputFlag(c *cobra.Command, dst *string) {
	c.Flags().StringVarP(dst, "output", "o", outputTable, "output format: table or json")
}

func checkOutput(format string) error {
	switch format {
	case outputTable, outputJSON:
		return nil
	}
	return withHint(fmt.Errorf("unknown output format %q", format), "use --output table or --output json")
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// writeTable prints a header and rows aligned in columns.
func writeTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// printRecord prints one record: as the service sent it with --output json,
// else as the name/value lines fields makes of it. what names the record in
// a decoding error.
func printRecord[T any](w io.Writer, output string, raw json.RawMessage, what string, fields func(*T) [][2]string) error {
	if output == outputJSON {
		return writeRaw(w, raw)
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("decoding the %s: %w", what, err)
	}
	return writeFields(w, fields(&v))
}

// printItems prints the items of a query: a JSON array with --output json,
// else a table with the row each item decodes to.
func printItems(w io.Writer, output string, items []json.RawMessage, header []string, row func(json.RawMessage) ([]string, error)) error {
	if output == outputJSON {
		return writeJSON(w, items)
	}
	var rows [][]string
	for _, raw := range items {
		r, err := row(raw)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	return writeTable(w, header, rows)
}

// writeFields prints name/value pairs, one per line, aligned.
func writeFields(w io.Writer, fields [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], f[1])
	}
	return tw.Flush()
}

// dash renders an empty value as "-" in tables.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeRaw prints a JSON answer indented, keeping the service's field order.
func writeRaw(w io.Writer, raw json.RawMessage) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("null")
	}
	return writeJSON(w, raw)
}

// compactJSON renders a JSON value on one line for a table.
func compactJSON(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return ""
	}
	var buf bytes.Buffer
	if json.Compact(&buf, t) != nil {
		return string(t)
	}
	return buf.String()
}

// warnf prints a warning line; the command goes on.
func warnf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "dpsd: warning: "+format+"\n", args...)
}

func timeOf(t *dps.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format()
}
