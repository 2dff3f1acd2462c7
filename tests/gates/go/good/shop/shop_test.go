package shop

import "testing"

func TestTotal(t *testing.T) {
	if got := Total([]int{250, 300, -5}); got != 550 {
		t.Fatalf("Total = %d, want 550", got)
	}
}

func TestDiscounted(t *testing.T) {
	if got := Discounted([]int{1000}, 10); got != 900 {
		t.Fatalf("Discounted = %d, want 900", got)
	}
	if got := Discounted([]int{1000}, 200); got != 1000 {
		t.Fatalf("Discounted = %d, want 1000", got)
	}
}
