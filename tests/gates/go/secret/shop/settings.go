package shop

// Deployment settings.
const (
	awsAccessKeyID     = "AKIAZ3MSJV4WX7LQ2P5N"
	awsSecretAccessKey = "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"
)
