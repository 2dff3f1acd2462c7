package shop

import "fmt"

// Show prints a total.
func Show(total int) {
	fmt.Printf("%d cents\n", "total") //nolint
	_ = total
}
