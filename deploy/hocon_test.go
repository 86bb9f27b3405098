package deploy_test

import (
	"bufio"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// parseHOCON reads the subset of HOCON (the format of ElasticMQ's
// configuration) that deploy/elasticmq/elasticmq.conf uses: one statement
// per line, `key {` … `}` blocks, `key {}`, `key = value`, quoted or bare
// keys and values, `#` and `//` comments, and `include` lines (skipped). It
// rejects anything else, so a construct it does not understand fails the
// test instead of being misread.
func parseHOCON(text string) (map[string]any, error) {
	root := map[string]any{}
	stack := []map[string]any{root}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(stripComment(sc.Text()))
		cur := stack[len(stack)-1]
		switch {
		case line == "":
		case strings.HasPrefix(line, "include "):
		case line == "}":
			if len(stack) == 1 {
				return nil, fmt.Errorf("line %d: unbalanced }", n)
			}
			stack = stack[:len(stack)-1]
		case strings.HasSuffix(line, "{}"):
			key, err := hoconKey(strings.TrimSuffix(line, "{}"))
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			cur[key] = map[string]any{}
		case strings.HasSuffix(line, "{"):
			key, err := hoconKey(strings.TrimSuffix(strings.TrimSpace(strings.TrimSuffix(line, "{")), "="))
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			child := map[string]any{}
			cur[key] = child
			stack = append(stack, child)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fmt.Errorf("line %d: not a statement: %q", n, line)
			}
			key, err := hoconKey(k)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			cur[key] = unquote(strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(stack) != 1 {
		return nil, fmt.Errorf("%d unclosed {", len(stack)-1)
	}
	return root, nil
}

// stripComment cuts a `#` or `//` comment that is not inside quotes.
func stripComment(line string) string {
	quoted := false
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '"':
			quoted = !quoted
		case quoted:
		case line[i] == '#':
			return line[:i]
		case line[i] == '/' && i+1 < len(line) && line[i+1] == '/':
			return line[:i]
		}
	}
	return line
}

// hoconKey accepts a quoted key or a bare one without dots: in HOCON a
// bare dotted key is a path, which this reader does not expand.
func hoconKey(s string) (string, error) {
	raw := strings.TrimSpace(s)
	key := unquote(raw)
	if key == "" || strings.ContainsAny(key, " \t={}") || (key == raw && strings.Contains(key, ".")) {
		return "", fmt.Errorf("bad key %q", s)
	}
	return key, nil
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// lookup walks a parsed configuration along path and returns what is
// there, or fails the test.
func lookup(tb testing.TB, conf map[string]any, path ...string) any {
	tb.Helper()
	var cur any = conf
	for i, p := range path {
		m, ok := cur.(map[string]any)
		require.Truef(tb, ok, "%s is not a block", strings.Join(path[:i], "."))
		cur, ok = m[p]
		require.Truef(tb, ok, "%s is not set", strings.Join(path[:i+1], "."))
	}
	return cur
}

func TestParseHOCON(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    map[string]any
		wantErr string
	}{
		{
			name: "blocks values and comments",
			text: "include classpath(\"application.conf\")\n# note\nnode-address {\n  host = elasticmq // inline\n  context-path = \"\"\n}\nqueues {\n  a-b {\n    t = 60 seconds\n  }\n  c {}\n}\naws = {\n  accountId = \"0#0\"\n}\n",
			want: map[string]any{
				"node-address": map[string]any{"host": "elasticmq", "context-path": ""},
				"queues":       map[string]any{"a-b": map[string]any{"t": "60 seconds"}, "c": map[string]any{}},
				"aws":          map[string]any{"accountId": "0#0"},
			},
		},
		{name: "unclosed block", text: "queues {\n  a {}\n", wantErr: "unclosed"},
		{name: "stray brace", text: "}\n", wantErr: "unbalanced"},
		{name: "unknown construct", text: "queues [a, b]\n", wantErr: "not a statement"},
		{name: "dotted path keys are not supported", text: "a.b = 1\n", wantErr: "bad key"},
		{name: "quoted dotted keys are plain keys", text: "\"q.fifo\" {}\n", want: map[string]any{"q.fifo": map[string]any{}}},
		{name: "key with a space", text: "a b = 1\n", wantErr: "bad key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHOCON(tt.text)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}
