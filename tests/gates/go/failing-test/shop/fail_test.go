package shop

import "testing"

// Wrong on purpose: an empty basket costs nothing.
func TestEmptyBasketCostsOneCent(t *testing.T) {
	if got := Total(nil); got != 1 {
		t.Fatalf("Total(nil) = %d, want 1", got)
	}
}
