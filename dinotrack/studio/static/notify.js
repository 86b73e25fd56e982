// The status line and the error banner: every server error reaches the user as its one line.

const banner = document.getElementById("error");
const bannerText = document.getElementById("error-text");
const status = document.getElementById("status");
let statusTimer = null;

document.getElementById("error-close").addEventListener("click", () => {
  banner.hidden = true;
});

export function showError(error) {
  bannerText.textContent = error && error.message ? error.message : String(error);
  banner.classList.toggle("warning", bannerText.textContent.startsWith("warning:"));
  banner.hidden = false;
  console.error(error);
}

export function clearError() {
  banner.hidden = true;
}

/** A short message in the header; it fades after a few seconds unless `sticky`. */
export function showStatus(text, sticky = false) {
  status.textContent = text;
  clearTimeout(statusTimer);
  if (!sticky) statusTimer = setTimeout(() => (status.textContent = ""), 4000);
}

/**
 * Runs a user's action: clears the last error, then shows any error the action throws in the
 * banner. Resolves to the action's value, or null when it failed.
 */
export async function guarded(action) {
  clearError();
  try {
    return await action();
  } catch (error) {
    showError(error);
    return null;
  }
}
