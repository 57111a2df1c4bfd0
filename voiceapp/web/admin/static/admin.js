// voiceapp console: the only script. "Speak it" reads a tried reply with the browser's own voice.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.speak");
  if (!button || !("speechSynthesis" in window)) return;
  speechSynthesis.cancel();
  speechSynthesis.speak(new SpeechSynthesisUtterance(button.dataset.text || ""));
});
// Destructive forms (delete a document) ask first; without JavaScript they still work.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
