// Package lang picks the language of a response.
package lang

import "golang.org/x/text/language"

// Preferred is the first language an Accept-Language header asks for, or "en".
func Preferred(header string) string {
	tags, _, err := language.ParseAcceptLanguage(header)
	if err != nil || len(tags) == 0 {
		return "en"
	}
	return tags[0].String()
}
