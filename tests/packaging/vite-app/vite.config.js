import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// A new user's config: the React plugin and nothing for liveline.
export default defineConfig({
  plugins: [react()],
});
