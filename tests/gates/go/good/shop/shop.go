// Package shop adds up baskets of prices, in cents.
package shop

// Total is the sum of the prices; negative prices count as zero.
func Total(cents []int) int {
	sum := 0
	for _, c := range cents {
		if c < 0 {
			continue
		}
		sum += c
	}
	return sum
}

// Discounted is the total after a discount in percent (0 to 100).
func Discounted(cents []int, percent int) int {
	if percent < 0 || percent > 100 {
		return Total(cents)
	}
	t := Total(cents)
	return t - t*percent/100
}
