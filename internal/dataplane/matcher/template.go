package matcher

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// URI template matching is Envoy's envoy.path.match.uri_template
// (UriTemplateMatchConfig.path_template), which Istio emits for
// AuthorizationPolicy paths with {*} and {**}: the template is parsed as
// Envoy's uri_template_lib does and turned into the same RE2 expression.
//
//   - "*" matches one path segment: one or more of the RFC 3986 pchar
//     characters "a-zA-Z0-9-._~%!$&'()+,;:@" (no "/", "*" or "=").
//   - "**" matches zero or more of those characters and "/"; no operator
//     may follow it.
//   - "{name}", "{name=*}", "{name=videos/*}": a variable, matched as its
//     pattern (at most 5 per template, names of 1-16 characters).
//   - Literal segments are pchar characters; a trailing "/" is kept, and
//     text after the last operator of the last segment is a suffix
//     ("/**.mpd").
//
// The request path is matched whole, without its query and fragment.

// The character classes of Envoy's uri_template_internal.cc.
const (
	templateLiteral   = `a-zA-Z0-9\-._~%!$&'()+,;:@`
	templatePathGlob  = `[` + templateLiteral + `]+`
	templateTextGlob  = `[` + templateLiteral + `/]*`
	maxTemplateVars   = 5
	maxTemplateVarLen = 16
)

var (
	templateLiteralRE = regexp.MustCompile(`^[` + templateLiteral + `]+$`)
	templatePrintable = regexp.MustCompile(`^/[[:graph:]]*$`)
	templateVarName   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]*$`)
)

// URITemplate is a compiled Envoy URI template path matcher. It is
// immutable and safe for concurrent use.
type URITemplate struct {
	Template string
	re       *regexp.Regexp
}

// NewURITemplate parses template as Envoy does. It fails where Envoy's
// parser does: a template that does not start with "/" or holds a
// non-printable character, an invalid literal, variable or operator, an
// operator after "**", a repeated or badly named variable, or more than
// 5 variables.
func NewURITemplate(template string) (*URITemplate, error) {
	re, err := templateRegex(template)
	if err != nil {
		return nil, fmt.Errorf("path_template = %q: %w", template, err)
	}
	return &URITemplate{Template: template, re: regexp.MustCompile(`^` + re + `$`)}, nil
}

// Match reports whether path (a :path, with its query) matches the
// template; the query and fragment are not matched.
func (t *URITemplate) Match(path string) bool {
	return t.re.MatchString(StripQuery(path))
}

// StripQuery removes the query and fragment from a :path, as Envoy's
// PathUtil::removeQueryAndFragment does.
func StripQuery(path string) string {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		return path[:i]
	}
	return path
}

// templateSegment is a parsed segment: an operator ("*", "**"), a
// variable with its match (operators and literals), or a literal.
type templateSegment struct {
	op      string
	literal string
	isVar   bool
	varName string
	varPatt []templateSegment // operators and literals
}

func templateRegex(t string) (string, error) {
	if !templatePrintable.MatchString(t) {
		return "", errors.New("must start with / and hold only printable characters")
	}
	rest := t[1:]
	var segs []templateSegment
	var suffix string
	for rest != "" {
		var seg templateSegment
		var err error
		switch {
		case rest[0] == '*':
			seg.op, rest = consumeOperator(rest)
		case rest[0] == '{':
			seg, rest, err = consumeVariable(rest)
		default:
			seg.literal, rest, err = consumeLiteral(rest)
		}
		if err != nil {
			return "", err
		}
		segs = append(segs, seg)
		if rest == "" {
			break
		}
		if rest == "/" {
			segs = append(segs, templateSegment{}) // a trailing "/": an empty literal
			break
		}
		if rest[0] == '/' {
			rest = rest[1:]
			continue
		}
		// Text right after an operator or variable: the suffix.
		if suffix, rest, err = consumeLiteral(rest); err != nil {
			return "", err
		}
		if rest != "" {
			return "", errors.New("prefix match not supported")
		}
	}
	if err := checkTemplateVars(segs); err != nil {
		return "", err
	}
	var b strings.Builder
	for _, s := range segs {
		b.WriteString("/")
		b.WriteString(s.regex())
	}
	b.WriteString(regexp.QuoteMeta(suffix))
	return b.String(), nil
}

func consumeOperator(s string) (string, string) {
	if strings.HasPrefix(s, "**") {
		return "**", s[2:]
	}
	return "*", s[1:]
}

func consumeLiteral(s string) (string, string, error) {
	lit, _, _ := strings.Cut(s, "/")
	if !templateLiteralRE.MatchString(lit) {
		return "", "", fmt.Errorf("invalid literal %q", lit)
	}
	return lit, s[len(lit):], nil
}

func consumeVariable(s string) (templateSegment, string, error) {
	seg := templateSegment{isVar: true}
	body, rest, ok := strings.Cut(s[1:], "}")
	if len(s) < 2 || !ok {
		return seg, "", errors.New("unmatched variable bracket")
	}
	name, patt, hasPatt := strings.Cut(body, "=")
	if !templateVarName.MatchString(name) {
		return seg, "", fmt.Errorf("invalid variable name %q", name)
	}
	seg.varName = name
	if !hasPatt {
		return seg, rest, nil
	}
	if patt == "" {
		return seg, "", errors.New("empty variable match")
	}
	for patt != "" {
		var m templateSegment
		if patt[0] == '*' {
			m.op, patt = consumeOperator(patt)
		} else {
			var err error
			if m.literal, patt, err = consumeLiteral(patt); err != nil {
				return seg, "", err
			}
		}
		seg.varPatt = append(seg.varPatt, m)
		if patt != "" {
			if patt[0] != '/' || len(patt) == 1 {
				return seg, "", errors.New("invalid variable match")
			}
			patt = patt[1:]
		}
	}
	return seg, rest, nil
}

// checkTemplateVars applies Envoy's limits on variables and refuses any
// operator after "**".
func checkTemplateVars(segs []templateSegment) error {
	names := map[string]bool{}
	seenText := false
	for _, s := range segs {
		switch {
		case s.op != "":
			if seenText {
				return errors.New("glob after text glob")
			}
			seenText = s.op == "**"
		case s.isVar:
			if len(names) >= maxTemplateVars {
				return errors.New("exceeded variable count limit")
			}
			if len(s.varName) > maxTemplateVarLen {
				return errors.New("invalid variable length")
			}
			if names[s.varName] {
				return errors.New("repeated variable name")
			}
			names[s.varName] = true
			if len(s.varPatt) == 0 && seenText {
				return errors.New("implicit variable path glob after text glob")
			}
			for _, m := range s.varPatt {
				if m.op == "" {
					continue
				}
				if seenText {
					return errors.New("glob after text glob")
				}
				seenText = m.op == "**"
			}
		}
	}
	return nil
}

func (s templateSegment) regex() string {
	switch {
	case s.op == "*":
		return templatePathGlob
	case s.op == "**":
		return templateTextGlob
	case s.isVar:
		if len(s.varPatt) == 0 {
			return "(?P<" + s.varName + ">" + templatePathGlob + ")"
		}
		parts := make([]string, len(s.varPatt))
		for i, m := range s.varPatt {
			parts[i] = m.regex()
		}
		return "(?P<" + s.varName + ">" + strings.Join(parts, "/") + ")"
	}
	return regexp.QuoteMeta(s.literal)
}
