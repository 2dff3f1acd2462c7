// The team's own ESLint settings (style and the rules the team picks).
export default [
  {
    files: ["**/*.js"],
    languageOptions: { ecmaVersion: 2024, sourceType: "module" },
    rules: { "no-unused-vars": "error", "prefer-const": "error" },
  },
];
