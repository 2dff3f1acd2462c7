// Deployment settings.
export const awsAccessKeyId = "AKIAZ3MSJV4WX7LQ2P5N";
export const awsSecretAccessKey = "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";
